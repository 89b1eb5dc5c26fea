"""imaHash on this kernel: what `tetrahost probe` finds (a sleepable BPF-LSM
program calling bpf_ima_file_hash on an exec) and what `policy check` then
says about a policy whose Post asks for the hash.

The expectation comes from the kernel's own evidence, not from the probe:
BPF-LSM usable, 'ima' among the active LSMs and Linux 6.0+ (the helper)
mean the probe must find ima_hash; a broken probe program fails here.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent_harness import REPO
from kernel_expect import features

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]

POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: ima-check
spec:
  lsmhooks:
  - hook: "bprm_check_security"
    args:
    - index: 0
      type: "linux_binprm"
    selectors:
    - matchActions:
      - action: Post
        imaHash: true
"""


def active_lsms() -> list[str]:
    try:
        with open("/sys/kernel/security/lsm") as f:
            return f.read().strip().split(",")
    except OSError:
        return []


def ima_active() -> bool:
    """IMA is listed among the active LSMs only since Linux 6.9; before, its
    securityfs directory shows it."""
    return "ima" in active_lsms() or os.path.isdir("/sys/kernel/security/integrity/ima") \
        or os.path.isdir("/sys/kernel/security/ima")


def test_probe_finds_ima_hash_where_the_kernel_has_it():
    f = features()
    release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    expected = f.lsm and ima_active() and release >= (6, 0)
    assert f.ima_hash == expected, (f, active_lsms(), ima_active(), release)


def test_policy_check_says_why_there_is_no_hash(tmp_path):
    path = tmp_path / "ima.yaml"
    path.write_text(POLICY)
    out = subprocess.run([sys.executable, "-m", "tetrahost.cli.main", "policy", "check", str(path)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    f = features()
    if not f.lsm:
        expected = ("CANNOT ATTACH: lsm hook bprm_check_security: BPF-LSM is not usable on this kernel",
                    "imaHash not available here: it needs BPF-LSM, which is not usable on this kernel")
    elif not f.ima_hash:
        expected = ("BPF-LSM bprm_check_security", "imaHash not available here: this kernel gives BPF "
                    "programs no IMA hash")
    else:
        expected = ("BPF-LSM bprm_check_security", "imaHash not available here: the kernel could "
                    "(`tetrahost probe`: ima_hash yes), but tetrahost's hook programs do not ask IMA")
    assert all(e in out.stdout for e in expected), out.stdout
    assert "Post with the IMA hash of the file" in out.stdout
