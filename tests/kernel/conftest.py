"""Shared helpers for tests/kernel: tests that load BPF into this machine's kernel.

Mark a test or module `pytest.mark.needs_root` (e.g. ``pytestmark =
[pytest.mark.kernel, pytest.mark.needs_root]``) and it is skipped, with the
reason, when not run as root; or request the `root` fixture from a fixture.
A marker rather than an importable helper: every tests/ directory has a
conftest.py, so `from conftest import ...` would pick whichever came first.
"""
from __future__ import annotations

import os

import pytest

IS_ROOT = os.geteuid() == 0
ROOT_REASON = "needs root (CAP_BPF/CAP_SYS_ADMIN) to load BPF programs into the kernel"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_root: skipped unless run as root (loads BPF programs)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not IS_ROOT and item.get_closest_marker("needs_root"):
        pytest.skip(ROOT_REASON)


@pytest.fixture
def root() -> None:
    if not IS_ROOT:
        pytest.skip(ROOT_REASON)
