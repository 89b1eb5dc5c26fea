import os
from pathlib import Path

import pytest

from policytest_helpers import CONFORMANCE


@pytest.fixture
def merged_usr_root(tmp_path: Path) -> str:
    """A host tree with merged /usr: /bin -> usr/bin, /var/run -> /run."""
    for d in ("usr/bin", "usr/sbin", "etc", "run/secrets", "tmp", "var"):
        (tmp_path / d).mkdir(parents=True)
    os.symlink("usr/bin", tmp_path / "bin")
    os.symlink("usr/sbin", tmp_path / "sbin")
    os.symlink("/run", tmp_path / "var" / "run")
    for f in ("usr/bin/su", "usr/bin/sudo", "usr/bin/passwd", "usr/bin/python3.11", "etc/shadow"):
        (tmp_path / f).write_text("")
    os.symlink("python3.11", tmp_path / "usr/bin/python3")
    return str(tmp_path)


@pytest.fixture
def conformance_dir() -> Path:
    if not CONFORMANCE.is_dir():
        pytest.skip(f"conformance corpus not found at {CONFORMANCE} (expected <repo>/../shared/conformance)")
    return CONFORMANCE
