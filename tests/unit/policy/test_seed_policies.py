"""The four seed policies load into the expected models."""

import ipaddress

import pytest

from tetrahost.policy import ArgKind, PathValue, load_file


@pytest.fixture
def seed(conformance_dir, merged_usr_root):
    def load(name):
        policies = load_file(conformance_dir / "seed-policies" / f"{name}.yaml", root=merged_usr_root)
        assert len(policies) == 1
        return policies[0]
    return load


def test_block_cryptominers(seed):
    policy = seed("block-cryptominers")
    assert policy.name == "block-cryptominers"
    assert policy.mode == "enforce"
    (hook,) = policy.hooks
    assert (hook.kind, hook.name, hook.syscall, hook.return_) == ("kprobe", "security_bprm_check", False, False)
    assert hook.is_exec_hook
    (arg,) = hook.args
    assert (arg.index, arg.type, arg.kind) == (0, "linux_binprm", ArgKind.PATH)
    (selector,) = hook.selectors
    (binaries,) = selector.match_binaries
    assert binaries.operator == "In"
    assert [v.original for v in binaries.values] == ["/usr/bin/xmrig", "/tmp/xmrig", "/usr/bin/minerd"]
    # none exist in the fixture tree: resolved through their existing directories
    assert [v.canonical for v in binaries.values] == ["/usr/bin/xmrig", "/tmp/xmrig", "/usr/bin/minerd"]
    assert [a.action for a in selector.match_actions] == ["Sigkill"]
    assert selector.match_actions[0].signal == 9
    assert hook.has_enforcement
    assert hook.source.line == 7 and hook.source.path == "spec.kprobes[0]"


def test_detect_container_escape(seed):
    policy = seed("detect-container-escape")
    (hook,) = policy.hooks
    assert (hook.name, hook.syscall, hook.syscall_name) == ("__x64_sys_setns", True, "setns")
    assert [(a.index, a.base_type) for a in hook.args] == [(0, "int32"), (1, "int32")]
    (selector,) = hook.selectors
    (ns,) = selector.match_namespaces
    assert (ns.namespace, ns.operator, ns.values, ns.uses_host_ns) == ("Pid", "NotIn", ("host_ns",), True)
    assert [a.action for a in selector.match_actions] == ["Sigkill"]


def test_detect_privilege_escalation_canonicalizes_bin_su(seed):
    policy = seed("detect-privilege-escalation")
    (hook,) = policy.hooks
    (selector,) = hook.selectors
    (binaries,) = selector.match_binaries
    assert binaries.values == (PathValue("/bin/su", "/usr/bin/su"), PathValue("/usr/bin/sudo", "/usr/bin/sudo"),
                               PathValue("/usr/bin/passwd", "/usr/bin/passwd"))
    assert binaries.values[0].describe() == "/bin/su \u2192 /usr/bin/su"
    (ns,) = selector.match_namespaces
    assert (ns.namespace, ns.operator, ns.values) == ("Pid", "NotIn", ("host_ns",))
    assert [a.action for a in selector.match_actions] == ["Post"]
    assert not hook.has_enforcement


def test_monitor_sensitive_files(seed):
    policy = seed("monitor-sensitive-files")
    (hook,) = policy.hooks
    assert hook.name == "security_file_open" and not hook.is_exec_hook
    (selector,) = hook.selectors
    (match,) = selector.match_args
    assert (match.index, match.arg_position, match.operator, match.arg_base_type) == (0, 0, "Prefix", "file")
    assert match.values == ("/etc/shadow", "/etc/kubernetes/pki", "/var/run/secrets/kubernetes.io")
    assert [v.canonical for v in match.parsed] == [
        "/etc/shadow", "/etc/kubernetes/pki", "/run/secrets/kubernetes.io"]


def test_seeds_load_on_this_host(conformance_dir):
    for path in sorted((conformance_dir / "seed-policies").glob("*.yaml")):
        assert load_file(path), path


def test_network_values_are_parsed(conformance_dir):
    (policy,) = load_file(conformance_dir / "tetragon-examples" / "dns-only-specified-servers.yaml")
    protocol, port, addr = policy.hooks[0].selectors[0].match_args
    assert protocol.parsed == (6, 17)
    assert port.parsed[0].low == port.parsed[0].high == 53
    assert addr.operator == "NotDAddr" and addr.parsed == (ipaddress.ip_network("127.0.0.53/32"),)
