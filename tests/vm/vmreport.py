"""Read what the guest left in the results directory and judge it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

# Kernel messages that mean the kernel itself went wrong while we ran (a
# BPF program or the agent may have triggered it), even if every test passed.
KERNEL_TROUBLE = re.compile(
    r"WARNING:|BUG:|soft lockup|Oops|general protection fault|Call Trace|Kernel panic"
)


def read_exit_code(results: Path) -> int | None:
    """The guest's exit code, or None when the guest never got to the end."""
    try:
        return int((results / "exit_code").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


# A kernel message on the serial console (console.log): "[  448.777736] Oops: ..."
CONSOLE_KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] ")


def kernel_trouble(results: Path) -> list[str] | None:
    """Offending kernel lines from the guest's dmesg and, for a guest that
    died before writing it (a panic reboots it at once), from its console;
    None when neither was left."""
    dmesg = results / "dmesg.txt"
    console = results / "console.log"
    if not dmesg.is_file() and not console.is_file():
        return None
    lines = dmesg.read_text(errors="replace").splitlines() if dmesg.is_file() else []
    if console.is_file():
        seen = set(lines)
        lines += [line for line in console.read_text(errors="replace").splitlines()
                  if CONSOLE_KERNEL_LINE.match(line) and line not in seen]
    return [line for line in lines if KERNEL_TROUBLE.search(line)]


@dataclass
class JunitCounts:
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    not_applicable: int = 0     # skips saying "not applicable on this kernel" (a feature it lacks)
    failed_names: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        passed = self.tests - self.failures - self.errors - self.skipped
        return (
            f"{self.tests} tests: {passed} passed, {self.failures} failed, "
            f"{self.errors} errors, {self.skipped} skipped"
        )


def junit_counts(results: Path) -> JunitCounts | None:
    path = results / "junit.xml"
    if not path.is_file():
        return None
    counts = JunitCounts()
    root = ET.parse(path).getroot()
    for suite in root.iter("testsuite"):
        for attr in ("tests", "failures", "errors", "skipped"):
            setattr(counts, attr, getattr(counts, attr) + int(suite.get(attr, 0)))
        for case in suite.iter("testcase"):
            skipped = case.find("skipped")
            if skipped is not None and skipped.get("message", "").startswith("not applicable on this kernel"):
                counts.not_applicable += 1
            if case.find("failure") is not None or case.find("error") is not None:
                counts.failed_names.append(f"{case.get('classname')}::{case.get('name')}")
    return counts
