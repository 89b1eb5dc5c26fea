"""Validation errors: exact messages, lines and field paths."""

import pytest

from tetrahost.policy import PolicyLoadError, load_file, load_text

from policytest_helpers import errors_of, policy_text

FILE_ARG = """
kprobes:
- call: security_file_open
  args:
  - index: 0
    type: file
  - index: 1
    type: int
  selectors:
  - matchArgs:
    - index: {index}
      operator: {operator}
      values:
      - "{value}"
"""
# line of "operator:" in FILE_ARG once under spec: = 6 + 10 = 16; values[0] on 18


def file_arg_errors(operator, value, index=0):
    return errors_of(FILE_ARG.format(operator=operator, value=value, index=index))


def test_unknown_operator_lists_the_operators():
    (error,) = file_arg_errors("Prefx", "/etc")
    assert error == (
        'p.yaml:16: spec.kprobes[0].selectors[0].matchArgs[0].operator: unknown operator "Prefx" '
        "(expected one of: Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix, GreaterThan, LessThan, "
        "Mask, InMap, NotInMap, SAddr, DAddr, NotSAddr, NotDAddr, SPort, DPort, NotSPort, NotDPort, SPortPriv, DPortPriv, "
        'NotSPortPriv, NotDPortPriv, Protocol, Family, State); did you mean "Prefix"?')


def test_tetragon_only_operator():
    assert file_arg_errors("FileType", "x") == [
        "p.yaml:16: spec.kprobes[0].selectors[0].matchArgs[0].operator: "
        "operator FileType is not supported by tetrahost (yet)"]


@pytest.mark.parametrize("operator,index,message", [
    ("Prefix", 1, "operator Prefix cannot be used on argument 1 of type int "
                  "(operators for int: Equal, NotEqual, GreaterThan, LessThan, Mask, InMap, NotInMap)"),
    ("GreaterThan", 0, "operator GreaterThan cannot be used on argument 0 of type file "
                       "(operators for file: Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix)"),
    ("GT", 0, "operator GT cannot be used on argument 0 of type file "
              "(operators for file: Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix)"),
    ("DAddr", 1, "operator DAddr cannot be used on argument 1 of type int "
                 "(operators for int: Equal, NotEqual, GreaterThan, LessThan, Mask, InMap, NotInMap)"),
])
def test_operator_type_mismatch(operator, index, message):
    assert file_arg_errors(operator, "1", index=index) == [
        f"p.yaml:16: spec.kprobes[0].selectors[0].matchArgs[0].operator: {message}"]


def test_match_args_index_must_be_declared():
    assert file_arg_errors("Equal", "1", index=3) == [
        "p.yaml:15: spec.kprobes[0].selectors[0].matchArgs[0].index: "
        "index 3 does not refer to a declared argument (declared indexes: 0, 1)"]


@pytest.mark.parametrize("operator,index,value,message", [
    ("Equal", 1, "abc", '"abc" is not a number (decimal, 0x hex or 0 octal)'),
    ("Equal", 1, "4294967296", "4294967296 does not fit a int argument (range -2147483648 to 4294967295)"),
    ("Mask", 1, "-1", "-1 does not fit a int argument (range 0 to 4294967295 for Mask)"),
    ("Equal", 0, "etc/passwd", 'a file is matched by its full path, "etc/passwd" is not absolute'),
])
def test_bad_values(operator, index, value, message):
    assert file_arg_errors(operator, value, index=index) == [
        f"p.yaml:18: spec.kprobes[0].selectors[0].matchArgs[0].values[0]: {message}"]


def test_number_notations():
    result = load_text(policy_text(FILE_ARG.format(operator="Mask", value="0x40", index=1)))
    assert result.policies[0].hooks[0].selectors[0].match_args[0].parsed == (64,)
    result = load_text(policy_text(FILE_ARG.format(operator="Equal", value="010", index=1)))
    assert result.policies[0].hooks[0].selectors[0].match_args[0].parsed == (8,)


NET = """
kprobes:
- call: tcp_connect
  args:
  - index: 0
    type: sock
  selectors:
  - matchArgs:
    - index: 0
      operator: {operator}
      values:
      - "{value}"
"""


@pytest.mark.parametrize("operator,value,message", [
    ("DAddr", "10.0.0.0/33", '"10.0.0.0/33" is not an IPv4/IPv6 address or CIDR'),
    ("NotSAddr", "fe80::zz", '"fe80::zz" is not an IPv4/IPv6 address or CIDR'),
    ("DPort", "70000", '"70000" is not a port or port range (0-65535, or min:max)'),
    ("SPort", "90:80", '"90:80" is not a port or port range (0-65535, or min:max)'),
    ("Protocol", "IPPROTO_FOO", '"IPPROTO_FOO" is not a protocol number or IPPROTO_* name'),
    ("Family", "AF_NOPE", '"AF_NOPE" is not an address family number or AF_* name'),
    ("State", "TCP_OPEN", '"TCP_OPEN" is not a TCP state number or TCP_* name'),
])
def test_network_values(operator, value, message):
    assert errors_of(NET.format(operator=operator, value=value)) == [
        f"p.yaml:16: spec.kprobes[0].selectors[0].matchArgs[0].values[0]: {message}"]


def test_network_values_accepted():
    for operator, value, parsed in (("DAddr", "127.0.0.1/8", "127.0.0.0/8"), ("SPort", "1024:65535", "1024:65535"),
                                    ("DAddr", "::1", "::1/128"), ("State", "TCP_SYN_RECV", "3")):
        result = load_text(policy_text(NET.format(operator=operator, value=value)))
        (value_parsed,) = result.policies[0].hooks[0].selectors[0].match_args[0].parsed
        shown = value_parsed.describe() if hasattr(value_parsed, "describe") else str(value_parsed)
        assert shown == parsed


def test_sockaddr_has_no_destination():
    errors = errors_of(NET.replace("type: sock", "type: sockaddr").format(operator="DAddr", value="1.2.3.4"))
    assert errors == ["p.yaml:14: spec.kprobes[0].selectors[0].matchArgs[0].operator: operator DAddr cannot be "
                      "used on argument 0 of type sockaddr (operators for sockaddr: SAddr, NotSAddr, SPort, "
                      "NotSPort, SPortPriv, NotSPortPriv, Family)"]


@pytest.mark.parametrize("type_name,message", [
    ("bpf_prog", 'argument type "bpf_prog" is known to Tetragon but not supported by tetrahost yet'),
    ("char_iovec", 'argument type "char_iovec" is known to Tetragon but not supported by tetrahost yet'),
    ("strin", 'unknown argument type "strin" (expected one of: int8, uint8, int16, uint16, '
              "int32, uint32, int64, uint64, capability, kernel_cap_t, "
              "cap_inheritable, cap_permitted, cap_effective, string, char_buf, fd, file, path, dentry, "
              "linux_binprm, cred, user_namespace, sock, sockaddr, socket, skb, net_device, syscall64, kiocb, "
              "iov_iter, bpf_attr, bpf_map, perf_event, module, load_info, nop)"),
])
def test_arg_types(type_name, message):
    assert errors_of(f"""
        kprobes:
        - call: foo
          args:
          - index: 0
            type: {type_name}
        """) == [f"p.yaml:10: spec.kprobes[0].args[0].type: {message}"]


def test_char_buf_needs_a_size():
    assert errors_of("""
        kprobes:
        - call: sys_write
          syscall: true
          args:
          - index: 1
            type: char_buf
        """) == ["p.yaml:10: spec.kprobes[0].args[0]: a char_buf argument needs sizeArgIndex (the 1-based "
                 "position of the argument holding its size) or returnCopy: true"]


def test_kubernetes_only_fields():
    assert errors_of("""
        podSelector:
          matchLabels: {app: x}
        containerSelector: {}
        kprobes:
        - call: foo
        """) == [
        "p.yaml:6: spec.podSelector: podSelector is a Kubernetes-only field, tetrahost runs on plain hosts",
        "p.yaml:8: spec.containerSelector: containerSelector is a Kubernetes-only field, tetrahost runs on plain hosts"]


def test_namespaced_kind_is_rejected():
    text = policy_text("kprobes:\n- call: foo").replace("kind: TracingPolicy", "kind: TracingPolicyNamespaced")
    assert [e.render() for e in load_text(text, "p.yaml").errors] == [
        "p.yaml:2: kind: TracingPolicyNamespaced: namespaced policies are a Kubernetes concept, "
        "tetrahost runs on plain hosts (use kind: TracingPolicy)"]


def test_wrong_api_version():
    text = policy_text("kprobes:\n- call: foo").replace("cilium.io/v1alpha1", "cilium.io/v2")
    assert [e.render() for e in load_text(text, "p.yaml").errors] == [
        'p.yaml:1: apiVersion: unsupported apiVersion "cilium.io/v2" (expected "cilium.io/v1alpha1")']


def test_unknown_fields_everywhere_and_all_errors_collected():
    errors = errors_of("""
        kprobes:
        - call: foo
          sycall: true
          args:
          - index: 0
            type: int
            lable: x
          selectors:
          - matchArg:
            - index: 0
            matchActions:
            - action: Sigkil
            - action: FollowFD
        """)
    assert errors == [
        'p.yaml:8: spec.kprobes[0].sycall: unknown field "sycall" (expected one of: call, syscall, return, args, '
        'returnArg, returnArgAction, selectors, message, tags, ignore); did you mean "syscall"?',
        'p.yaml:12: spec.kprobes[0].args[0].lable: unknown field "lable" (expected one of: index, type, '
        'sizeArgIndex, returnCopy, maxData, label, resolve, btfType); did you mean "label"?',
        'p.yaml:14: spec.kprobes[0].selectors[0].matchArg: unknown field "matchArg" (expected one of: matchArgs, '
        "matchReturnArgs, matchBinaries, matchPIDs, matchNamespaces, matchCapabilities, matchNamespaceChanges, "
        'matchCapabilityChanges, matchActions, matchReturnActions); did you mean "matchArgs"?',
        'p.yaml:17: spec.kprobes[0].selectors[0].matchActions[0].action: unknown action "Sigkil" (expected one '
        'of: Post, NoPost, Sigkill, Signal, Override, TrackSock, UntrackSock, Set, DnsLookup, GetUrl, '
        'NotifyEnforcer); did you mean "Sigkill"?',
        "p.yaml:18: spec.kprobes[0].selectors[0].matchActions[1].action: action FollowFD is not supported by "
        "tetrahost (yet)",
    ]


def test_limits():
    selectors = "\n".join("  - matchActions:\n    - action: Post" for _ in range(6))
    errors = errors_of("kprobes:\n- call: foo\n  selectors:\n" + selectors)
    assert errors == ["p.yaml:8: spec.kprobes[0].selectors: 6 selectors, the limit is 5 per hook"]
    errors = errors_of("""
        kprobes:
        - call: foo
          selectors:
          - matchPIDs:
            - operator: In
              values: [1, 2, 3, 4, 5]
        """)
    assert errors == ["p.yaml:11: spec.kprobes[0].selectors[0].matchPIDs[0].values: 5 PIDs, the limit is 4 per "
                      "matchPIDs entry"]


def test_process_filters():
    errors = errors_of("""
        kprobes:
        - call: foo
          selectors:
          - matchNamespaces:
            - namespace: Pidd
              operator: In
              values: [host_ns, "12x"]
            matchCapabilities:
            - type: Effective
              operator: In
              values: [CAP_SYS_ADMN, cap_chown]
            matchBinaries:
            - operator: Prefix
              followChildren: true
              values: [bash]
        """)
    assert errors == [
        'p.yaml:10: spec.kprobes[0].selectors[0].matchNamespaces[0].namespace: unknown namespace "Pidd" '
        "(expected one of: Uts, Ipc, Mnt, Pid, PidForChildren, Net, Time, TimeForChildren, Cgroup, User); "
        'did you mean "Pid"?',
        'p.yaml:12: spec.kprobes[0].selectors[0].matchNamespaces[0].values[1]: "12x" is not a namespace inode '
        'number or "host_ns"',
        'p.yaml:16: spec.kprobes[0].selectors[0].matchCapabilities[0].values[0]: unknown capability '
        '"CAP_SYS_ADMN" (expected a CAP_* name such as CAP_SYS_ADMIN)',
        'p.yaml:16: spec.kprobes[0].selectors[0].matchCapabilities[0].values[1]: capability names are upper '
        'case: "CAP_CHOWN"',
        "p.yaml:19: spec.kprobes[0].selectors[0].matchBinaries[0].followChildren: followChildren works with In "
        "and NotIn, not Prefix",
        'p.yaml:20: spec.kprobes[0].selectors[0].matchBinaries[0].values[0]: matchBinaries values are absolute '
        'paths of executables, got "bash"',
    ]


def test_actions():
    errors = errors_of("""
        tracepoints:
        - subsystem: syscalls
          event: sys_enter_openat
          selectors:
          - matchActions:
            - action: Override
              argError: -1
            - action: Signal
            - action: Sigkill
              rateLimit: 1m
        kprobes:
        - call: foo
          selectors:
          - matchActions:
            - action: Post
              rateLimit: 5x
              rateLimitScope: thread
        """)
    assert errors == [
        "p.yaml:11: spec.tracepoints[0].selectors[0].matchActions[0].action: Override needs a function to "
        "override; a tracepoint has none (use a kprobe or an LSM hook)",
        "p.yaml:13: spec.tracepoints[0].selectors[0].matchActions[1].argSig: required field is missing",
        "p.yaml:15: spec.tracepoints[0].selectors[0].matchActions[2].rateLimit: rateLimit is only valid with "
        "the Post action",
        'p.yaml:21: spec.kprobes[0].selectors[0].matchActions[0].rateLimit: "5x" is not a rate limit (a positive '
        'number of seconds, optionally followed by s, m or h: "30", "5m", "1h")',
    ]


def test_policy_mode_and_rate_limit_model():
    result = load_text(policy_text("""
        options:
        - name: policy-mode
          value: monitor
        kprobes:
        - call: foo
          selectors:
          - matchActions:
            - action: Post
              rateLimit: 2m
              rateLimitScope: process
        """))
    assert result.errors == []
    (policy,) = result.policies
    assert policy.mode == "monitor"
    (action,) = policy.hooks[0].selectors[0].match_actions
    assert (action.rate_limit_seconds, action.rate_limit_scope) == (120, "process")
    assert policy.hooks[0].syscall is False and policy.hooks[0].syscall_inferred


def test_syscall_inferred_from_name():
    (policy,) = load_text(policy_text("kprobes:\n- call: sys_mount")).policies
    assert policy.hooks[0].syscall and policy.hooks[0].syscall_name == "mount"


def test_match_return_args_need_return():
    assert errors_of("""
        kprobes:
        - call: foo
          selectors:
          - matchReturnArgs:
            - operator: Equal
              values: ["0"]
        """) == [
        "p.yaml:9: spec.kprobes[0].selectors[0].matchReturnArgs: matchReturnArgs needs a kprobe with return: true",
        "p.yaml:10: spec.kprobes[0].selectors[0].matchReturnArgs[0]: matchReturnArgs needs returnArg (the type of "
        "the return value)"]


def test_yaml_syntax_error_has_a_line():
    result = load_text("apiVersion: cilium.io/v1alpha1\nkind: [\n", "p.yaml")
    (error,) = result.errors
    assert error.line == 3 and error.code == "yaml-syntax"


def test_duplicate_keys():
    assert errors_of("kprobes:\n- call: foo\n  call: bar") == ["p.yaml:8: spec.kprobes[0].call: duplicate field"]


def test_multi_document_file(tmp_path):
    path = tmp_path / "two.yaml"
    one = policy_text("kprobes:\n- call: foo")
    path.write_text(one + "---\n" + one.replace("name: test", "name: other") + "---\n")
    assert [p.name for p in load_file(path)] == ["test", "other"]
    assert [p.document for p in load_file(path)] == [0, 1]
    path.write_text(one + "---\n" + one)
    with pytest.raises(PolicyLoadError) as caught:
        load_file(path)
    assert caught.value.errors[0].render() == (
        f'{path}:12: metadata.name: policy "test" is already defined in this file (line 4)')


def test_load_file_raises_with_all_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(policy_text("kprobes:\n- call: foo\n  bogus: 1\n  other: 2"))
    with pytest.raises(PolicyLoadError) as caught:
        load_file(path)
    assert [e.line for e in caught.value.errors] == [8, 9]
    assert str(caught.value).startswith(f"{path}: 2 errors\n{path}:8: spec.kprobes[0].bogus: unknown field")


def test_unreadable_file(tmp_path):
    with pytest.raises(PolicyLoadError) as caught:
        load_file(tmp_path / "missing.yaml")
    assert caught.value.errors[0].render().endswith("missing.yaml: cannot read the file: No such file or directory")
