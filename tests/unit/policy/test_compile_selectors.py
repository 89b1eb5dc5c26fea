"""Compiling the process selectors for the kernel side: Postfix sets,
matchPIDs entries and flags, followChildren, isNamespaceCapability,
matchCapabilityChanges and matchNamespaceChanges (th_selector fields)."""
import textwrap

import pytest

from tetrahost.bpf.native import lib
from tetrahost.events.namespaces import NAMESPACE_KINDS, HostNamespaces
from tetrahost.policy import load_text
from tetrahost.policy.compile import CompileError, compile_hook
from tetrahost.sensors.generic import str_set_key

from policytest_helpers import CONFORMANCE, policy_text

HOST = HostNamespaces(tuple(4026531830 + i for i in range(len(NAMESPACE_KINDS))))
USERNS = HOST.inode("user")


def compiled(selectors: str, host=HOST, args: str = "- {index: 0, type: file}"):
    spec = f"""
kprobes:
- call: security_file_open
  syscall: false
  args:
{textwrap.indent(textwrap.dedent(args).strip(chr(10)), "  ")}
  selectors:
{textwrap.indent(textwrap.dedent(selectors).strip(chr(10)), "  ")}
"""
    result = load_text(policy_text(spec), file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    return compile_hook(result.policies[0].hooks[0], 3, host)


def test_postfix_and_notpostfix_on_a_file_argument_go_to_the_postfix_set():
    out = compiled("""
- matchArgs:
  - {index: 0, operator: Postfix, values: [".so.5.6.0", "/id_rsa"]}
  - {index: 0, operator: NotPostfix, values: [".bak"]}
""")
    sel = out.config.selectors[0]
    assert (sel.args[0].op, sel.args[0].negate) == (lib.TH_MATCH_POSTFIX, 0)
    assert (sel.args[1].op, sel.args[1].negate) == (lib.TH_MATCH_POSTFIX, 1)
    a, b = sel.args[0].set_id, sel.args[1].set_id
    assert a != b
    assert sorted(out.str_postfix) == sorted([(a, b".so.5.6.0"), (a, b"/id_rsa"), (b, b".bak")])
    assert out.str_equal == [] and out.str_prefix == []


def test_postfix_key_is_the_reversed_value_with_its_length_as_prefix():
    key = str_set_key(9, b".so"[::-1], prefix=True)
    assert int.from_bytes(key[:4], "little") == 32 + 8 * 3
    assert int.from_bytes(key[4:8], "little") == 9
    assert key[8:11] == b"os." and set(key[11:]) == {0}


def test_matchbinaries_postfix():
    out = compiled("""
- matchBinaries:
  - {operator: NotPostfix, values: ["/sshd"]}
""")
    sel = out.config.selectors[0]
    assert (sel.bin_op, sel.bin_negate) == (lib.TH_MATCH_POSTFIX, 1)
    assert out.str_postfix == [(sel.bin_set_id, b"/sshd")]
    assert out.config.flags & lib.TH_CFG_NEEDS_BINARY
    assert not out.needs_proc_state


def test_several_matchpids_entries_with_their_flags():
    out = compiled("""
- matchPIDs:
  - {operator: NotIn, followForks: true, isNamespacePID: true, values: [1]}
  - {operator: NotIn, followForks: true, values: [0, 7]}
  - {operator: In, values: [42]}
""")
    sel = out.config.selectors[0]
    assert sel.npids == 3
    p = sel.pids
    assert (p[0].negate, p[0].flags, p[0].nvalues, p[0].pids[0]) == \
        (1, lib.TH_PID_FOLLOW_FORKS | lib.TH_PID_NAMESPACE, 1, 1)
    assert (p[1].negate, p[1].flags, p[1].nvalues, list(p[1].pids)[:2]) == (1, lib.TH_PID_FOLLOW_FORKS, 2, [0, 7])
    assert (p[2].negate, p[2].flags, p[2].pids[0]) == (0, 0, 42)
    assert not out.needs_proc_state          # the walk is in BPF: no process sensor state


def test_more_matchpids_entries_than_the_kernel_side_holds():
    entries = "\n".join(f"  - {{operator: NotIn, values: [{i}]}}" for i in range(lib.TH_MAX_PID_MATCH + 1))
    with pytest.raises(CompileError, match=r"selectors\[0\]\.matchPIDs: 5 entries"):
        compiled("- matchPIDs:\n" + entries)


def test_follow_children_is_left_to_the_policy_manager():
    out = compiled("""
- matchBinaries:
  - {operator: In, followChildren: true, values: ["/usr/sbin/sshd"]}
""")
    assert out.needs_proc_state
    assert out.follow == [(0, (b"/usr/sbin/sshd",))]
    assert out.config.selectors[0].bin_follow == 0    # the bit is given when it loads


def test_is_namespace_capability_carries_the_host_user_namespace():
    out = compiled("""
- matchCapabilities:
  - {type: Permitted, operator: NotIn, isNamespaceCapability: true, values: [CAP_CHOWN, CAP_NET_RAW]}
""")
    sel = out.config.selectors[0]
    assert (sel.caps_kind, sel.caps_negate, sel.caps_mask, sel.caps_userns) == (2, 1, 1 << 0 | 1 << 13, USERNS)
    plain = compiled("- matchCapabilities:\n  - {type: Effective, operator: In, values: [CAP_CHOWN]}")
    assert plain.config.selectors[0].caps_userns == 0


def test_is_namespace_capability_needs_the_host_user_namespace():
    with pytest.raises(CompileError, match="isNamespaceCapability: the host user namespace is unknown"):
        compiled("- matchCapabilities:\n  - {operator: In, isNamespaceCapability: true, values: [CAP_CHOWN]}",
                 host=HostNamespaces.unknown())


def test_capability_changes():
    out = compiled("""
- matchCapabilityChanges:
  - {type: Effective, operator: In, isNamespaceCapability: true, values: [CAP_SYS_ADMIN, CAP_NET_RAW]}
""")
    sel = out.config.selectors[0]
    assert (sel.capch_kind, sel.capch_negate, sel.capch_mask, sel.capch_userns) == \
        (1, 0, 1 << 21 | 1 << 13, USERNS)
    assert sel.caps_kind == 0
    assert out.needs_proc_state


def test_namespace_changes_in_and_notin():
    sel = compiled("- matchNamespaceChanges:\n  - {operator: In, values: [Mnt, Net]}").config.selectors[0]
    assert sel.nsch_mask == 1 << lib.TH_NS_MNT | 1 << lib.TH_NS_NET
    sel = compiled("- matchNamespaceChanges:\n  - {operator: NotIn, values: [Mnt]}").config.selectors[0]
    assert sel.nsch_mask == ((1 << lib.TH_NS_COUNT) - 1) & ~(1 << lib.TH_NS_MNT)


def test_namespace_changes_notin_every_kind_is_refused_not_dropped():
    every = ", ".join(NAMESPACE_KINDS_POLICY)  # the policy spellings
    with pytest.raises(CompileError, match="NotIn every namespace kind never matches"):
        compiled(f"- matchNamespaceChanges:\n  - {{operator: NotIn, values: [{every}]}}")


NAMESPACE_KINDS_POLICY = ("Uts", "Ipc", "Mnt", "Pid", "PidForChildren", "Net", "Time", "TimeForChildren",
                          "Cgroup", "User")


def test_a_selector_without_the_new_features_pays_nothing():
    sel = compiled("- matchArgs:\n  - {index: 0, operator: Prefix, values: [/etc/]}").config.selectors[0]
    assert (sel.npids, sel.bin_follow, sel.caps_userns, sel.capch_kind, sel.nsch_mask) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize("example", [
    "cves/cve-2024-3094-xz-ssh.yaml", "sys_clock_settime.yaml", "sys_pivot_root.yaml",
    "fd_install_cap_changes.yaml", "fd_install_caps.yaml",
])
def test_tetragon_examples_selectors_compile(example):
    """The examples of the selector features compile (or name something other
    than a selector: return probes in the xz one)."""
    path = CONFORMANCE / "tetragon-examples" / example
    if not path.is_file():
        pytest.skip(f"{path} not found")
    result = load_text(path.read_text(), file=str(path))
    assert result.ok
    for hook in result.policies[0].hooks:
        try:
            compile_hook(hook, 1, HOST)
        except CompileError as exc:
            assert "return probes" in str(exc), str(exc)


@pytest.mark.parametrize("selectors, needs", [
    ("- matchArgs:\n  - {index: 0, operator: Prefix, values: [/etc/shadow]}", False),
    ("- matchBinaries:\n  - {operator: In, values: [/bin/x]}", False),
    ("- matchCapabilities:\n  - {type: Effective, operator: In, values: [CAP_SYS_ADMIN]}", False),
    ("- matchNamespaces:\n  - {namespace: Pid, operator: NotIn, values: [host_ns]}", True),
    ("- matchNamespaceChanges:\n  - {operator: In, values: [Mnt]}", True),
    ("- matchCapabilities:\n  - {type: Effective, operator: In, isNamespaceCapability: true, "
     "values: [CAP_SYS_ADMIN]}", True),
    # one selector that compares namespaces is enough for the whole hook
    ("- matchArgs:\n  - {index: 0, operator: Prefix, values: [/etc]}\n"
     "- matchNamespaces:\n  - {namespace: Net, operator: In, values: [host_ns]}", True),
])
def test_namespaces_are_read_before_the_selectors_only_where_one_compares_them(selectors, needs):
    # Without the flag the kernel reads them for a matching event only (run_hook).
    assert bool(compiled(selectors).config.flags & lib.TH_CFG_NEEDS_NS) is needs
