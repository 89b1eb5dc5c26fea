"""cred, user_namespace, capability, kernel_cap_t and kernel-memory char_buf
arguments on Debian's 6.1 kernel (kprobes / fentry / BPF-LSM).

One agent, one policy per case; every case is triggered by a process of its
own (a pid or a copied binary), so each proves what it reports and that
nothing else reached it.  Tetragon's own kprobe_commit_creds.yaml is loaded
unmodified.
"""
from __future__ import annotations

import base64
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from agent_harness import policy_text, REPO, RunningAgent

BASE = "/tmp/thvm-args"
COMMIT_CREDS = REPO.parent / "shared" / "conformance" / "tetragon-examples" / "kprobe_commit_creds.yaml"
FULL_CAPS_61 = (1 << 41) - 1          # CAP_CHOWN .. CAP_CHECKPOINT_RESTORE

POLICIES = {
    # cap_capable(const struct cred *, struct user_namespace *, int cap, unsigned int opts)
    "cap-checks": f"""
  kprobes:
  - call: cap_capable
    syscall: false
    args:
    - index: 0
      type: cred
    - index: 1
      type: user_namespace
    - index: 2
      type: capability
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{BASE}/unshare"]
      matchArgs:
      - index: 2
        operator: Equal
        values: ["CAP_SYS_ADMIN"]
""",
    # security_capset(new, old, const kernel_cap_t *effective, *inheritable, *permitted)
    "capset": f"""
  kprobes:
  - call: security_capset
    syscall: false
    args:
    - index: 2
      type: kernel_cap_t
    - index: 3
      type: cap_inheritable
    - index: 4
      type: cap_permitted
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{BASE}/setpriv"]
      matchArgs:
      - index: 2
        operator: Mask
        values: ["CAP_SYS_ADMIN"]
""",
    # security_inode_setxattr(mnt_userns, dentry, name, const void *value, size_t size, flags):
    # the value is a kernel copy of the caller's buffer
    "setxattr-value": """
  kprobes:
  - call: security_inode_setxattr
    syscall: false
    args:
    - index: 2
      type: string
    - index: 3
      type: char_buf
      sizeArgIndex: 5
    - index: 4
      type: size_t
    selectors:
    - matchArgs:
      - index: 2
        operator: Prefix
        values: ["user.thvm"]
      - index: 3
        operator: Prefix
        values: ["THVM"]
""",
}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    d = tmp_path_factory.mktemp("policies")
    os.makedirs(BASE, exist_ok=True)
    for tool in ("unshare", "setpriv"):
        shutil.copy2(f"/usr/bin/{tool}", f"{BASE}/{tool}")
    args = ["--policy", str(COMMIT_CREDS)]
    for name, body in POLICIES.items():
        (d / f"{name}.yaml").write_text(policy_text(name, body))
        args += ["--policy", str(d / f"{name}.yaml")]
    a = RunningAgent(tmp_path_factory.mktemp("agent"), *args)
    yield a
    a.stop()


def events_of(agent, name, pred=lambda e: True, count=1):
    def mine(e):
        return any(k.startswith("process_") and isinstance(v, dict) and v.get("policy_name") == name and pred(v)
                   for k, v in e.items())
    agent.wait_events(mine, count)
    agent.settle()      # every earlier event is in: a wrong extra one is among them
    return [v for e in agent.events() if mine(e) for k, v in e.items() if k.startswith("process_")]


def test_every_hook_is_active(agent):
    log = agent.log_text()
    assert "not active" not in log, log


def test_commit_creds_reports_the_new_credentials(agent):
    code = "import os; os.setgroups([]); os.setresgid(4242, 4242, 4242); os.setresuid(4243, 4243, 4243)"
    child = subprocess.Popen([sys.executable, "-c", code])
    assert child.wait() == 0
    # the exec and setgroups commit credentials too: wait for the two with gid 4242
    evs = events_of(agent, "commit-creds", lambda v: v["process"]["pid"] == child.pid and
                    v["args"][0]["process_credentials_arg"].get("gid") == 4242, count=2)
    creds = [e["args"][0]["process_credentials_arg"] for e in evs if e["process"]["pid"] == child.pid]
    assert [(c["uid"], c["gid"]) for c in creds][-2:] == [(0, 4242), (4243, 4242)]
    by_gid, by_uid = creds[-2], creds[-1]
    assert (by_gid["egid"], by_gid["sgid"], by_gid["fsgid"]) == (4242, 4242, 4242)
    assert by_gid["caps"]["effective"] == by_gid["caps"]["permitted"] and "CAP_SYS_ADMIN" in by_gid["caps"]["effective"]
    # leaving uid 0 clears the capability sets
    assert (by_uid["euid"], by_uid["suid"], by_uid["fsuid"], by_uid["caps"]) == (4243, 4243, 4243, {})
    ns = os.stat("/proc/self/ns/user").st_ino
    assert by_uid["user_ns"] == {"level": 0, "uid": 0, "gid": 0, "ns": {"inum": ns, "is_host": True}}


def test_cap_capable_cred_user_namespace_and_capability(agent):
    r = subprocess.run([f"{BASE}/unshare", "-u", "/bin/true"], capture_output=True)
    assert r.returncode == 0, r.stderr
    subprocess.run(["/usr/bin/unshare", "-u", "/bin/true"], check=True)      # another binary: not reported
    evs = events_of(agent, "cap-checks")
    assert {e["process"]["binary"] for e in evs} == {f"{BASE}/unshare"}
    cred, user_ns, cap = evs[0]["args"]
    assert cap == {"capability_arg": {"value": 21, "name": "CAP_SYS_ADMIN"}}
    ns = os.stat("/proc/self/ns/user").st_ino
    assert user_ns == {"user_ns_arg": {"level": 0, "uid": 0, "gid": 0, "ns": {"inum": ns, "is_host": True}}}
    c = cred["process_credentials_arg"]
    assert (c["uid"], c["euid"], c["user_ns"]["ns"]["inum"]) == (0, 0, ns)


def test_capset_kernel_cap_t_read_through_the_pointer_and_matched_with_mask(agent):
    # keeps the effective and permitted sets, empties the inheritable one
    r = subprocess.run([f"{BASE}/setpriv", "--inh-caps=-all", "/bin/true"], capture_output=True)
    assert r.returncode == 0, r.stderr
    ev = events_of(agent, "capset")[0]
    assert ev["args"][0] == {"kernel_cap_t_arg": f"{FULL_CAPS_61:016x}"}
    assert ev["args"][1] == {"cap_inheritable_arg": "0000000000000000"}
    assert ev["args"][2] == {"cap_permitted_arg": f"{FULL_CAPS_61:016x}"}


def test_char_buf_in_kernel_memory(agent):
    target = pathlib.Path(BASE) / "xattr-file"
    target.write_text("x")
    value = b"THVM-value\0with a NUL"
    for name, data in (("user.thvm", value), ("user.other", b"THVM-other"), ("user.thvm2", b"nope")):
        try:
            os.setxattr(target, name, data)
        except OSError:
            pass            # the file system may refuse user.*: the hook ran before it
    evs = events_of(agent, "setxattr-value")
    # the guest's /tmp is an overlay: it passes the call on to its upper layer,
    # which runs the hook again with the same arguments
    assert {str(e["args"]) for e in evs} == {str([{"string_arg": "user.thvm"},
                                                  {"bytes_arg": base64.b64encode(value).decode()},
                                                  {"size_arg": str(len(value))}])}
