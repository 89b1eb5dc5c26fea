"""A policy the kernel side cannot hold is reported like any policy error:
`file:line: field.path: message`.  Limits the validator knows (from
csrc/events.h) are rejected when the file loads; what only the compiler sees
carries the same location (the deepest element its field names)."""
from __future__ import annotations

import textwrap

import pytest

from tetrahost.constants import TH_MAX_NS_MATCH, TH_MAX_PID_MATCH
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy import load_text
from tetrahost.policy.compile import CompileError, compile_hook
from tetrahost.policy.compiled import locate
from tetrahost.policy.vocab import NAMESPACE_KINDS

HEAD = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: limits
spec:
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - {index: 0, type: file}
    selectors:
    - matchArgs:
      - {index: 0, operator: Prefix, values: [/etc]}
"""   # the selector starts on line 12


def test_more_namespace_entries_than_the_kernel_side_holds_is_a_policy_error():
    kinds = NAMESPACE_KINDS[:TH_MAX_NS_MATCH + 1]
    entries = "".join(f"      - {{namespace: {k}, operator: In, values: [1]}}\n" for k in kinds)
    result = load_text(HEAD + "      matchNamespaces:\n" + entries, file="ns.yaml")
    assert [e.render() for e in result.errors] == [
        f"ns.yaml:14: spec.kprobes[0].selectors[0].matchNamespaces: {len(kinds)} namespace entries, the limit "
        f"is {TH_MAX_NS_MATCH} (what the kernel side evaluates per selector)"]
    # and as many as it holds load and compile
    ok = load_text(HEAD + "      matchNamespaces:\n" + "".join(entries.splitlines(True)[:TH_MAX_NS_MATCH]),
                   file="ns.yaml")
    assert ok.ok, [e.render() for e in ok.errors]
    assert compile_hook(ok.policies[0].hooks[0], 1, HostNamespaces.unknown()).config.selectors[0].nns == TH_MAX_NS_MATCH


def test_a_compile_time_rejection_names_file_line_and_field():
    entries = "".join(f"      - {{operator: NotIn, values: [{i}]}}\n" for i in range(TH_MAX_PID_MATCH + 1))
    result = load_text(HEAD + "      matchPIDs:\n" + entries, file="/etc/tetragon/policies.d/pids.yaml")
    assert result.ok, [e.render() for e in result.errors]
    with pytest.raises(CompileError) as caught:
        compile_hook(result.policies[0].hooks[0], 1, HostNamespaces.unknown())
    exc = caught.value
    assert exc.render() == (f"/etc/tetragon/policies.d/pids.yaml:12: spec.kprobes[0].selectors[0].matchPIDs: "
                            f"{TH_MAX_PID_MATCH + 1} entries; the kernel side evaluates at most "
                            f"{TH_MAX_PID_MATCH} per selector")
    assert (exc.error.file, exc.error.line, exc.error.path) == (
        "/etc/tetragon/policies.d/pids.yaml", 12, "spec.kprobes[0].selectors[0].matchPIDs")


def test_an_argument_error_points_at_the_argument():
    text = textwrap.dedent("""\
        apiVersion: cilium.io/v1alpha1
        kind: TracingPolicy
        metadata:
          name: ret
        spec:
          kprobes:
          - call: sys_openat
            syscall: true
            args:
            - {index: 0, type: int}
            - {index: 1, type: char_buf, sizeArgIndex: 3, returnCopy: true}
        """)
    result = load_text(text, file="r.yaml")
    assert result.ok, [e.render() for e in result.errors]
    with pytest.raises(CompileError) as caught:
        compile_hook(result.policies[0].hooks[0], 1, HostNamespaces.unknown())
    assert caught.value.render() == ("r.yaml:11: spec.kprobes[0].args[1].returnCopy: needs a return probe "
                                     "(return: true)")


def test_an_error_of_the_whole_hook_names_the_hook():
    hook = load_text(HEAD, file="h.yaml").policies[0].hooks[0]
    err = CompileError("6 arguments; the kernel side reads at most 5")
    assert locate(hook, err).render() == "h.yaml:7: spec.kprobes[0]: 6 arguments; the kernel side reads at most 5"
