"""Tests in tests/vm run only inside the Debian 6.1 guest that tests/vm/run.py boots.

On the host (a plain `pytest tests/`) they are collected and skipped with a
reason, so they never fail there for lack of kprobes, fentry or BPF-LSM.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# the agent harness is shared with tests/kernel: importable from every VM test
sys.path.insert(0, str(HERE.parent / "kernel"))
IN_VM = os.environ.get("TETRAHOST_IN_VM") == "1"
SKIP_ON_HOST = pytest.mark.skip(reason="runs only inside the Debian 6.1 guest: use tests/vm/run.py")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: needs the Debian 6.1 QEMU guest (tests/vm/run.py)")


# tryfirst: the marker must be on the items before `-m vm` deselects by it.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item of the session, not only ours.
    for item in items:
        if HERE not in item.path.resolve().parents:
            continue
        # Every test here is a VM test: `-m vm` in the guest selects them all.
        item.add_marker(pytest.mark.vm)
        if not IN_VM:
            item.add_marker(SKIP_ON_HOST)
