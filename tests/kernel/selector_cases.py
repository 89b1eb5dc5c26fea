"""The policies and workloads of tests/kernel/test_policy_selectors.py: selector
cases on the openat tracepoint (what each opens, what must match) and the
process-selector policies on kernel-function hooks."""
from __future__ import annotations

import os

O_WRONLY, O_CREAT = os.O_WRONLY, os.O_CREAT
# os.open() adds O_CLOEXEC (PEP 446): the kernel sees flags | 0x80000 (524288) in the int cases
BASE = "/tmp/thsel"
SH = f"{BASE}/bin/thsel-sh"
BINS_TARGET = f"{BASE}/bins/file"


def policy(name: str, selectors: str, extra_args: str = "", options: str = "") -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
{options}  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args:
    - index: 6
      type: string
    - index: 7
      type: int
{extra_args}    selectors:
{selectors}
"""


# name -> (selectors yaml, [(path suffix, flags)], suffixes that must match)
CASES = {
    "str-equal": ("""    - matchArgs:
      - index: 0
        operator: Equal
        values: ["/tmp/thsel/str-equal/a"]
""", [("a", 0), ("ab", 0), ("b", 0)], {"a"}),
    "str-prefix": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/str-prefix/keep"]
""", [("keep-1", 0), ("keep", 0), ("drop", 0)], {"keep-1", "keep"}),
    "str-notprefix": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/str-notprefix/"]
      - index: 0
        operator: NotPrefix
        values: ["/tmp/thsel/str-notprefix/skip"]
""", [("skip-1", 0), ("other", 0)], {"other"}),
    "str-notequal": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/str-notequal/"]
      - index: 0
        operator: NotEqual
        values: ["/tmp/thsel/str-notequal/x"]
""", [("x", 0), ("y", 0)], {"y"}),
    "int-mask": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/int-mask/"]
      - index: 1
        operator: Mask
        values: ["64"]
""", [("creat", O_WRONLY | O_CREAT), ("read", 0)], {"creat"}),
    "int-gt-lt": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/int-gt-lt/"]
      - index: 1
        operator: GreaterThan
        values: ["524288"]
      - index: 1
        operator: LessThan
        values: ["524290"]
""", [("wronly", O_WRONLY), ("rdonly", 0), ("creat", O_WRONLY | O_CREAT)], {"wronly"}),
    "int-equal": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/int-equal/"]
      - index: 1
        operator: Equal
        values: ["524288", "524289"]
""", [("r", 0), ("w", O_WRONLY), ("c", O_WRONLY | O_CREAT)], {"r", "w"}),
    "nopost": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/nopost/"]
      matchActions:
      - action: NoPost
""", [("a", 0)], set()),
    "rate-limited": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/rate-limited/"]
      matchActions:
      - action: Post
        rateLimit: "1m"
        rateLimitScope: process
""", [("a", 0), ("b", 0), ("c", 0)], {"a"}),
    "second-selector": ("""    - matchArgs:
      - index: 0
        operator: Equal
        values: ["/tmp/thsel/second-selector/one"]
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["/tmp/thsel/second-selector/two"]
""", [("one", 0), ("two", 0), ("three", 0)], {"one", "two"}),
}


# matchBinaries In with policy-mode monitor (a Sigkill that only says what it
# would have done), and matchPIDs In, on the tracepoint: (selectors, options)
def process_cases(cat: str) -> dict[str, tuple[str, str]]:
    return {
        "bins-monitor": (f"""    - matchBinaries:
      - operator: In
        values: ["{cat}"]
      matchArgs:
      - index: 0
        operator: Equal
        values: ["{BINS_TARGET}"]
      matchActions:
      - action: Sigkill
""", "  options:\n  - name: policy-mode\n    value: monitor\n"),
        "my-pid": (f"""    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 0
        operator: Equal
        values: ["{BINS_TARGET}"]
""", ""),
    }


PROC_POLICIES = {
    # matchArgs Postfix + matchBinaries followChildren, kprobe/fentry on a kernel function
    "postfix-follow": f"""
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Postfix
        values: ["/follow/f.key"]
      matchBinaries:
      - operator: In
        followChildren: true
        values: ["{SH}"]
""",
    # several matchPIDs entries, isNamespacePID, followForks, on a syscall kprobe
    "ns-pids": f"""
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 0
      type: int
    - index: 1
      type: string
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{BASE}/pids/"]
      matchPIDs:
      - operator: In
        isNamespacePID: true
        values: [1]
      - operator: NotIn
        followForks: true
        values: [HELPER]
""",
    # fd_install_caps.yaml's selector: namespaced capabilities only
    "caps-userns": f"""
  kprobes:
  - call: fd_install
    syscall: false
    args:
    - index: 0
      type: int
    - index: 1
      type: file
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{BASE}/userns/"]
      matchCapabilities:
      - type: Effective
        operator: In
        isNamespaceCapability: true
        values: ["CAP_SYS_ADMIN"]
""",
    # changes since exec: capabilities at a kprobe, namespaces at BPF-LSM
    "capch": f"""
  kprobes:
  - call: fd_install
    syscall: false
    args:
    - index: 0
      type: int
    - index: 1
      type: file
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{BASE}/capch/"]
      matchCapabilityChanges:
      - type: Effective
        operator: In
        values: ["CAP_SYS_ADMIN"]
""",
    "nsch": f"""
  lsmhooks:
  - hook: file_open
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{BASE}/nsch/"]
      matchNamespaceChanges:
      - operator: In
        values: ["Uts"]
""",
}

# capability, then namespace change between opens; each reported once
CHANGES = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def touch(p):
    os.close(os.open(p, os.O_RDONLY | os.O_CREAT, 0o600))
def set_sys_admin(on):
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    assert libc.capget(hdr, data) == 0
    data[0] = data[0] | 1 << 21 if on else data[0] & ~(1 << 21)    # effective, CAP_SYS_ADMIN
    assert libc.capset(hdr, data) == 0
b = sys.argv[1]
touch(b + '/capch/before'); touch(b + '/nsch/before')
set_sys_admin(False)
touch(b + '/capch/after1'); touch(b + '/capch/after2')
set_sys_admin(True)                              # unshare() needs it
assert libc.unshare(0x04000000) == 0            # CLONE_NEWUTS
touch(b + '/nsch/after1'); touch(b + '/nsch/after2')
"""
