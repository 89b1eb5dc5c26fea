"""imaHash on this kernel: what `tetrahost probe` finds (a sleepable BPF-LSM
program calling bpf_ima_file_hash on an exec) and what `policy check` then
says about a policy whose Post asks for the hash.

The expectation comes from the kernel's own evidence, not from the probe:
BPF-LSM usable, IMA active and Linux 6.0+ (the helper) mean the probe must
find ima_hash; a broken probe program fails here.  IMA is listed among the
active LSMs only since Linux 6.9; before, its securityfs directory shows it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from agent_harness import REPO, policy_events, start_with_policies
from kernel_expect import features, not_applicable

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
        expected = ("BPF-LSM bprm_check_security; imaHash from sleepable BPF-LSM bprm_check_security",)
        assert "imaHash not available here" not in out.stdout, out.stdout
    assert all(e in out.stdout for e in expected), out.stdout
    assert "Post with the IMA hash of the file" in out.stdout


ID = uuid.uuid4().hex[:6]
NAME = f"ima-{ID}"
EXEC_POLICY = f"""
  lsmhooks:
  - hook: "bprm_check_security"
    args:
    - index: 0
      type: "linux_binprm"
    selectors:
    - matchArgs:
      - index: 0
        operator: "Postfix"
        values: ["th-ima-{ID}-a", "th-ima-{ID}-b"]
      matchActions:
      - action: Post
        imaHash: true
"""


def test_exec_events_carry_the_files_own_hash(tmp_path_factory):
    """Where the probe found ima_hash: an exec of a file we made gives a
    process_lsm event whose ima_hash is IMA's sha256 of that file, and an
    exec of a different file its own."""
    if not features().ima_hash:
        not_applicable("the kernel gives BPF programs no IMA hash (test_policy_check_says_why_there_is_no_hash "
                       "checks that the policy check says so)")
    d = tmp_path_factory.mktemp("ima")
    files = []
    for tag in ("a", "b"):      # /bin/true with different trailing bytes: both run, hashes differ
        path = d / f"th-ima-{ID}-{tag}"
        shutil.copyfile("/bin/true", path)
        with open(path, "ab") as f:
            f.write(f"{ID}-{tag}".encode())
        path.chmod(0o755)
        files.append(str(path))
    agent = start_with_policies(tmp_path_factory, {NAME: EXEC_POLICY})
    try:
        for n, path in enumerate(files, 1):
            subprocess.run([path], check=True)
            events = policy_events(agent, NAME, count=n)
            assert len(events) == n, events
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            assert events[-1]["ima_hash"] == f"sha256:{digest}", (path, events[-1])
    finally:
        assert agent.stop() == 0
