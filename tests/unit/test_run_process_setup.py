"""Process-wide settings `tetrahost run` makes before loading anything."""
from __future__ import annotations

import ctypes
import platform

import pytest

from tetrahost.cli.run_cmd import return_freed_memory_promptly


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_malloc_thresholds_are_fixed_on_glibc():
    # glibc accepts both settings (mallopt returns 1); a wrong parameter
    # number or a missing symbol would make this False
    assert return_freed_memory_promptly() is True


def test_without_mallopt_it_says_so(monkeypatch):
    class NoMallopt:
        def __init__(self, _name):
            pass
    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert return_freed_memory_promptly() is False
