"""Compiling network selectors: CIDRs into th_hook_config.cidrs, port ranges
into low | high << 16, protocol/family/state numbers, argument kinds."""
import ipaddress
import socket
import textwrap

import pytest

from tetrahost.bpf.native import lib
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy import load_text
from tetrahost.policy.compile import CompileError, compile_hook

HEADER = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n"


def compiled(spec: str, hook: int = 0):
    result = load_text(HEADER + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n", file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    h = result.policies[0].hooks[hook]
    return compile_hook(h, 7, HostNamespaces.unknown())


def tcp_connect(match_args: str, arg_type: str = "sock", call: str = "tcp_connect") -> str:
    return f"""
kprobes:
- call: {call}
  syscall: false
  args:
  - index: 0
    type: {arg_type}
  selectors:
  - matchArgs:
{textwrap.indent(textwrap.dedent(match_args).strip(chr(10)), "    ")}
"""


def cidr(cfg, i):
    c = cfg.cidrs[i]
    n = 4 if c.family == socket.AF_INET else 16
    return (c.family, c.addr[:n], c.mask[:n], c.prefixlen, c.addr[n:], c.mask[n:])


def test_arg_kinds():
    out = compiled("""
kprobes:
- call: security_socket_connect
  syscall: false
  args:
  - {index: 0, type: socket}
  - {index: 1, type: sockaddr}
  - {index: 2, type: int}
- call: __cgroup_bpf_run_filter_skb
  syscall: false
  args:
  - {index: 0, type: sock}
  - {index: 1, type: skb}
- call: sys_connect
  syscall: true
  args:
  - {index: 1, type: sockaddr}
""")
    assert out.arg_kinds == [lib.TH_ARG_SOCKET, lib.TH_ARG_SOCKADDR, lib.TH_ARG_INT]
    skb = compiled("""
kprobes:
- call: __cgroup_bpf_run_filter_skb
  syscall: false
  args:
  - {index: 0, type: sock}
  - {index: 1, type: skb}
""")
    assert skb.arg_kinds == [lib.TH_ARG_SOCK, lib.TH_ARG_SKB]
    assert list(skb.config.arg_src)[:2] == [0, 1]
    user = compiled("""
kprobes:
- call: sys_connect
  syscall: true
  args:
  - {index: 1, type: sockaddr}
""")
    assert user.arg_kinds == [lib.TH_ARG_SOCKADDR_USER]


def test_ipv4_and_ipv6_cidrs_are_masked_network_order_and_shared():
    out = compiled(tcp_connect("""
- index: 0
  operator: NotDAddr
  values: ["10.0.0.0/8", "172.16.0.0/12", "127.0.0.1/8", "fd00:1::/64"]
- index: 0
  operator: SAddr
  values: ["10.9.9.9/8", "2001:db8::1"]
"""))
    cfg = out.config
    m, m2 = cfg.selectors[0].args[0], cfg.selectors[0].args[1]
    assert (m.op, m.negate, m.nvalues) == (lib.TH_MATCH_DADDR, 1, 4)
    assert cfg.ncidrs == 5                         # 10.9.9.9/8 is 10.0.0.0/8 again
    assert (m2.op, m2.negate, m2.values[0]) == (lib.TH_MATCH_SADDR, 0, m.values[0])
    assert cidr(cfg, m.values[0]) == (2, bytes([10, 0, 0, 0]), bytes([255, 0, 0, 0]), 8, bytes(12), bytes(12))
    assert cidr(cfg, m.values[1])[:4] == (2, bytes([172, 16, 0, 0]), bytes([255, 240, 0, 0]), 12)
    assert cidr(cfg, m.values[2])[:3] == (2, bytes([127, 0, 0, 0]), bytes([255, 0, 0, 0]))
    v6 = cidr(cfg, m.values[3])
    assert v6[:4] == (10, ipaddress.ip_address("fd00:1::").packed, bytes([255] * 8 + [0] * 8), 64)
    assert cidr(cfg, m2.values[1])[2] == bytes([255] * 16)


def test_ports_ranges_priv_and_numbers():
    out = compiled(tcp_connect("""
- index: 0
  operator: DPort
  values: ["443", "8000:8080"]
- index: 0
  operator: NotSPort
  values: ["0:1023"]
- index: 0
  operator: DPortPriv
- index: 0
  operator: Protocol
  values: ["IPPROTO_TCP", "17"]
- index: 0
  operator: State
  values: ["TCP_SYN_SENT"]
"""))
    a = out.config.selectors[0].args
    assert (a[0].op, a[0].negate, list(a[0].values)[:2], a[0].nvalues) == \
        (lib.TH_MATCH_DPORT, 0, [443 | 443 << 16, 8000 | 8080 << 16], 2)
    assert (a[1].op, a[1].negate, a[1].values[0]) == (lib.TH_MATCH_SPORT, 1, 1023 << 16)
    assert (a[2].op, a[2].nvalues) == (lib.TH_MATCH_DPORT_PRIV, 0)
    assert (a[3].op, list(a[3].values)[:2]) == (lib.TH_MATCH_PROTOCOL, [6, 17])
    assert (a[4].op, a[4].values[0]) == (lib.TH_MATCH_STATE, 2)


def test_sockaddr_family_and_saddr():
    out = compiled(tcp_connect("""
- index: 0
  operator: Family
  values: ["AF_INET", "AF_INET6"]
- index: 0
  operator: SAddr
  values: ["192.168.1.1"]
""", arg_type="sockaddr", call="security_socket_connect"))
    a = out.config.selectors[0].args
    assert (a[0].op, list(a[0].values)[:2]) == (lib.TH_MATCH_FAMILY, [2, 10])
    assert cidr(out.config, a[1].values[0])[:4] == (2, bytes([192, 168, 1, 1]), b"\xff" * 4, 32)


def test_too_many_prefixes_is_a_compile_error():
    selectors = "".join(f"""
  - matchArgs:""" + "".join(f"""
    - index: 0
      operator: DAddr
      values: [{", ".join(f'"10.{s}.{k * 4 + j}.0/24"' for j in range(4))}]""" for k in range(2)) for s in range(5))
    with pytest.raises(CompileError, match="more than 32 different address prefixes"):
        compiled(f"""
kprobes:
- call: tcp_connect
  syscall: false
  args:
  - index: 0
    type: sock
  selectors:{selectors}
""")


def test_tracepoint_pointer_field_read_as_sock():
    from tetrahost.tracefs import Field
    fields = [Field(name=n, type=t, offset=o, size=s, signed=False) for n, t, o, s in
              [("common_type", "unsigned short", 0, 2), ("common_flags", "unsigned char", 2, 1),
               ("common_preempt_count", "unsigned char", 3, 1), ("common_pid", "int", 4, 4),
               ("skaddr", "const void *", 8, 8)]]
    result = load_text(HEADER + """  tracepoints:
  - subsystem: sock
    event: inet_sock_set_state
    args:
    - index: 4
      type: sock
""", file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    out = compile_hook(result.policies[0].hooks[0], 1, HostNamespaces.unknown(), fields=fields)
    assert out.arg_kinds == [lib.TH_ARG_SOCK]
    assert (out.config.arg_offset[0], out.config.arg_field[0]) == (8, 8)


def test_conformance_network_examples_compile():
    import pathlib
    from tetrahost.policy import load_path
    root = pathlib.Path(__file__).resolve().parents[3] / "shared" / "conformance" / "tetragon-examples"
    names = ["tcp-connect", "tcp-connect-only-local-addrs", "tcp-connect-only-private-addrs",
             "tcp-connect-with-selectors", "security-socket-connect", "security-socket-connect-block-others",
             "datagram", "datagram-with-selectors"]
    if not root.is_dir():
        pytest.skip("conformance examples not present")
    for name in names:
        result = load_path(root / f"{name}.yaml")
        assert result.ok, name
        for policy in result.policies:
            for i, hook in enumerate(policy.hooks):
                compile_hook(hook, i, HostNamespaces.unknown())
