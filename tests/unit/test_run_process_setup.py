"""Process-wide settings `tetrahost run` makes before loading anything."""
from __future__ import annotations

import ctypes
import platform

import pytest

from tetrahost.cli.run_cmd import GC_YOUNG_THRESHOLD, collect_cycles_less_often, return_freed_memory_promptly


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_malloc_thresholds_are_fixed_on_glibc():
    # glibc accepts both settings (mallopt returns 1); a wrong parameter
    # number or a missing symbol would make this False
    assert return_freed_memory_promptly() is True


def test_the_cyclic_collector_runs_less_often():
    import gc
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 7, 9)
        collect_cycles_less_often()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 7, 9)    # older generations as they were
        assert GC_YOUNG_THRESHOLD > 700
    finally:
        gc.set_threshold(*before)


def test_without_mallopt_it_says_so(monkeypatch):
    class NoMallopt:
        def __init__(self, _name):
            pass
    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert return_freed_memory_promptly() is False


def test_a_failure_to_run_is_one_line_not_a_traceback(monkeypatch, capsys, tmp_path):
    """`tetrahost run` stopped by anything (another agent on the socket, a
    probe error, a bug): one error line on stderr, the traceback only at
    debug level."""
    import faulthandler
    import logging
    import os
    import sys
    from types import SimpleNamespace

    from tetrahost import daemon, logrates
    from tetrahost.cli import main as cli_main
    from tetrahost.cli import run_cmd

    class Refuses:
        def __init__(self, *a, **kw):
            raise RuntimeError("another agent is serving /run/tetrahost/x.sock\nsecond line")

    monkeypatch.setattr(daemon, "Agent", Refuses)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    # process-wide settings this test must not leave behind
    monkeypatch.setattr(logrates, "install", lambda: SimpleNamespace(flush=lambda: None))
    monkeypatch.setattr(faulthandler, "enable", lambda *a, **kw: None)
    monkeypatch.setattr(faulthandler, "register", lambda *a, **kw: None)
    monkeypatch.setattr(run_cmd, "return_freed_memory_promptly", lambda: True)
    monkeypatch.setattr(run_cmd, "setup_agent_logging", lambda cfg: logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s", force=True))
    args = ["run", "--no-stdout", "--export-file", str(tmp_path / "e.json"), "--no-socket"]
    assert cli_main.main(args) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ERROR")]
    assert lines == ["ERROR tetrahost run: another agent is serving /run/tetrahost/x.sock | second line"]
    assert "Traceback" not in err

    class Bug:
        def __init__(self, *a, **kw):
            raise KeyError("k")

    monkeypatch.setattr(daemon, "Agent", Bug)
    assert cli_main.main(args) == 1
    err = capsys.readouterr().err
    assert "ERROR tetrahost run: KeyError: 'k'" in err.splitlines() and "Traceback" not in err
