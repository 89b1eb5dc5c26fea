"""Every test that should run on this kernel runs: with TETRAHOST_STRICT_SKIPS=1
(`make test-host`, and the guest runs of the kernel suite) the session fails
when a test skipped for any reason but these, and the skip reasons are listed:

- "not applicable on this kernel: ..." (tests/kernel/kernel_expect.py): the
  kernel lacks what the test is about, as `tetrahost probe` found;
- tests/vm outside the guest ("runs only inside the Debian ... guest").
"""
from __future__ import annotations

import os
import signal

import pytest

ALLOWED_SKIPS = ("not applicable on this kernel", "runs only inside the Debian")
STRICT = os.environ.get("TETRAHOST_STRICT_SKIPS") == "1"

_unexpected: list[str] = []

# The tests stop agents and `tetra getevents` streams with SIGINT (Ctrl-C).  A
# shell that starts the suite in the background without job control hands it
# SIGINT ignored, every child inherits that, and such a stop waits forever.  A
# handler here is reset to the default in each child it starts.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = _reason(report)
        if not reason.startswith(ALLOWED_SKIPS):
            _unexpected.append(f"{report.nodeid}: {reason}")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _unexpected:
        terminalreporter.section("tests that should run on this kernel but skipped", red=True)
        for line in _unexpected:
            terminalreporter.line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
