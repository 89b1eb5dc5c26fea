"""Rendering network arguments (sock_arg, sockaddr_arg, skb_arg, net_dev_arg) and their host fields,
their compact lines, the netns/interface name resolver, and the tuple's
layout against the BPF object's BTF."""
import ipaddress
import os
import pathlib

import pytest

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.netns import NetnsResolver, named_namespaces
from tetrahost.export.compact import format_event
from tetrahost.export.arg_json import net_host_fields, render_arg, render_net_arg

BPF_DIR = pathlib.Path(__file__).resolve().parents[2] / "build" / "bpf"


def tuple_bytes(**fields) -> bytes:
    t = ffi.new("struct th_sock_tuple *")
    for name, value in fields.items():
        if name in ("saddr", "daddr"):
            packed = ipaddress.ip_address(value).packed
            ffi.memmove(getattr(t, name), packed, len(packed))
        elif name == "ifname":
            ffi.memmove(t.ifname, value.encode(), len(value))
        else:
            setattr(t, name, value)
    return bytes(ffi.buffer(t))


class FakeResolver:
    def name(self, inum):
        return {4026532177: "th-a"}.get(inum)

    def ifname(self, inum, ifindex):
        return {(4026532177, 2): "tha0"}.get((inum, ifindex))


TCP4 = dict(family=2, type=1, protocol=6, state=2, flags=lib.TH_SOCK_HAS_PORTS, sport=40000, dport=443,
            saddr="10.1.0.1", daddr="10.1.0.2", cookie=0xffff888812345678, netns=4026532177)


def test_sock_arg_is_tetragon_shaped_netns_in_host_fields():
    out = render_net_arg(lib.TH_ARG_SOCK, tuple_bytes(**TCP4), FakeResolver())
    assert out == {"sock_arg": {
        "family": "AF_INET", "type": "SOCK_STREAM", "protocol": "IPPROTO_TCP",
        "saddr": "10.1.0.1", "daddr": "10.1.0.2", "sport": 40000, "dport": 443,
        "cookie": str(0xffff888812345678), "state": "TCP_SYN_SENT"}}        # uint64 cookie: a JSON string
    assert net_host_fields(lib.TH_ARG_SOCK, tuple_bytes(**TCP4), FakeResolver()) == \
        {"netns": 4026532177, "netns_name": "th-a"}


def test_sock_arg_ipv6_mark_priority_bound_device():
    raw = tuple_bytes(**dict(TCP4, family=10, saddr="fd00:1::1", daddr="fd00:1::2", mark=7, priority=3,
                             ifindex=2, state=10))
    sa = render_net_arg(lib.TH_ARG_SOCKET, raw, FakeResolver())["sock_arg"]
    assert (sa["family"], sa["saddr"], sa["daddr"], sa["state"]) == ("AF_INET6", "fd00:1::1", "fd00:1::2",
                                                                     "TCP_LISTEN")
    assert (sa["mark"], sa["priority"]) == (7, 3)
    host = net_host_fields(lib.TH_ARG_SOCKET, raw, FakeResolver())
    assert (host["ifindex"], host["ifname"]) == (2, "tha0")


def test_sockaddr_skb_netdev_and_failed_reads():
    raw = tuple_bytes(family=2, saddr="192.168.77.2", sport=8001, flags=lib.TH_SOCK_HAS_PORTS)
    assert render_net_arg(lib.TH_ARG_SOCKADDR, raw) == \
        {"sockaddr_arg": {"family": "AF_INET", "addr": "192.168.77.2", "port": 8001}}
    assert render_net_arg(lib.TH_ARG_SOCKADDR_USER, tuple_bytes(family=1)) == \
        {"sockaddr_arg": {"family": "AF_UNIX"}}
    skb = render_net_arg(lib.TH_ARG_SKB, tuple_bytes(family=2, protocol=17, saddr="10.1.0.1", daddr="10.1.0.2",
                                                     sport=5000, dport=9300, len=33, flags=lib.TH_SOCK_HAS_PORTS))
    assert skb == {"skb_arg": {"family": "AF_INET", "len": 33, "proto": 17, "protocol": "IPPROTO_UDP",
                               "saddr": "10.1.0.1", "daddr": "10.1.0.2", "sport": 5000, "dport": 9300}}
    dev = render_net_arg(lib.TH_ARG_NETDEV, tuple_bytes(ifname="eth0", ifindex=2, netns=4026532177), FakeResolver())
    assert dev == {"net_dev_arg": {"name": "eth0"}}
    assert net_host_fields(lib.TH_ARG_NETDEV, tuple_bytes(ifname="eth0", ifindex=2, netns=4026532177),
                           FakeResolver()) == {"ifindex": 2, "netns": 4026532177, "netns_name": "th-a"}
    assert render_net_arg(lib.TH_ARG_SOCK, tuple_bytes(flags=lib.TH_SOCK_READ_FAILED)) == {"sock_arg": {}}


def test_render_arg_dispatches_network_kinds_and_keeps_labels():
    class Arg:
        label = "sk"
    assert render_arg(lib.TH_ARG_SOCK, Arg(), tuple_bytes(**TCP4))["label"] == "sk"


def event(function, args, kind="process_kprobe", action="KPROBE_ACTION_POST"):
    return {kind: {"process": {"binary": "/usr/bin/curl"}, "function_name": function, "args": args,
                   "action": action}, "node_name": "node1"}


def test_compact_connect_listen_accept_close_datagram():
    sock = render_net_arg(lib.TH_ARG_SOCK, tuple_bytes(**TCP4))
    assert format_event(event("tcp_connect", [sock])) == \
        "🔌 connect node1 /usr/bin/curl tcp 10.1.0.1:40000 -> 10.1.0.2:443"
    assert format_event(event("tcp_close", [sock])).startswith("🧹 close   node1 /usr/bin/curl tcp 10.1.0.1:40000")
    assert format_event(event("inet_csk_listen_start", [sock])).startswith("👂 listen  node1")
    assert format_event(event("security_socket_accept", [sock])).startswith("🤝 accept  node1")
    v6 = render_net_arg(lib.TH_ARG_SOCK, tuple_bytes(**dict(TCP4, family=10, saddr="fd00::1", daddr="fd00::2")))
    assert format_event(event("tcp_connect", [v6])).endswith("tcp [fd00::1]:40000 -> [fd00::2]:443")
    udp = render_net_arg(lib.TH_ARG_SKB, tuple_bytes(family=2, protocol=17, saddr="10.1.0.1", daddr="10.1.0.2",
                                                     sport=5000, dport=53, flags=lib.TH_SOCK_HAS_PORTS))
    assert format_event(event("__cgroup_bpf_run_filter_skb", [{"sock_arg": {}}, udp, {"int_arg": 1}])) == \
        "📦 datagram node1 /usr/bin/curl udp 10.1.0.1:5000 -> 10.1.0.2:53"


def test_compact_security_socket_connect_override_and_lsm():
    sock = render_net_arg(lib.TH_ARG_SOCKET, tuple_bytes(family=2, type=1, protocol=6))
    addr = render_net_arg(lib.TH_ARG_SOCKADDR, tuple_bytes(family=2, saddr="192.168.77.2", sport=8001,
                                                           flags=lib.TH_SOCK_HAS_PORTS))
    line = format_event(event("security_socket_connect", [sock, addr, {"int_arg": 16}],
                              action="KPROBE_ACTION_OVERRIDE"))
    assert line == "🔌 connect node1 /usr/bin/curl tcp -> 192.168.77.2:8001 ⛔ OVERRIDE"
    lsm = format_event(event("socket_connect", [sock, addr], kind="process_lsm"))
    assert lsm == "🔌 connect node1 /usr/bin/curl tcp -> 192.168.77.2:8001"
    other = format_event(event("tcp_set_state", [render_net_arg(lib.TH_ARG_SOCK, tuple_bytes(**TCP4))]))
    assert other.startswith("🔀 state   node1 /usr/bin/curl tcp 10.1.0.1:40000")
    unknown = format_event(event("tcp_retransmit_skb", [render_net_arg(lib.TH_ARG_SOCK, tuple_bytes(**TCP4))]))
    assert unknown.endswith("tcp_retransmit_skb tcp 10.1.0.1:40000 -> 10.1.0.2:443")


def test_netns_names_from_run_netns_and_cached_interface_lookups(tmpfs_path):
    (tmpfs_path / "blue").write_text("")
    (tmpfs_path / "red").write_text("")
    ino_blue = os.stat(tmpfs_path / "blue").st_ino
    assert named_namespaces(str(tmpfs_path), mounted_only=False)[ino_blue] == "blue"
    assert named_namespaces(str(tmpfs_path)) == {}     # plain files: no namespace mounted there
    calls = []
    now = [0.0]

    def lookup(netns, ifindex):
        calls.append((netns, ifindex))
        return {("blue", 3): "veth-blue", (None, 1): "lo"}.get((netns, ifindex))

    r = NetnsResolver(run_netns=str(tmpfs_path), link_lookup=lookup, clock=lambda: now[0], mounted_only=False)
    assert r.name(ino_blue) == "blue" and r.name(12345) is None
    assert r.ifname(ino_blue, 3) == "veth-blue"
    assert r.ifname(ino_blue, 3) == "veth-blue" and calls == [("blue", 3)]       # cached
    assert r.ifname(r.own, 1) == "lo"
    assert r.ifname(999, 1) is None and len(calls) == 2                         # anonymous netns: no lookup
    assert r.ifname(ino_blue, 9) is None and r.ifname(ino_blue, 9) is None and len(calls) == 3
    now[0] = 10.0
    assert r.ifname(ino_blue, 9) is None and len(calls) == 4                    # negative entries expire


def test_net_records_match_btf():
    import json
    import shutil
    import subprocess
    if not shutil.which("bpftool"):
        pytest.skip("bpftool is not installed")
    obj = BPF_DIR / "generic.bpf.o"
    if not obj.is_file():
        pytest.fail(f"{obj} is not built: run `make bpf`")
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(obj), "-j"], check=True, capture_output=True,
                         text=True).stdout
    structs = {t["name"]: t for t in json.loads(out)["types"] if t["kind"] == "STRUCT" and "name" in t}
    for name in ("th_sock_tuple", "th_cidr", "th_hook_config"):
        btf, ctype = structs[name], f"struct {name}"
        assert btf["size"] == ffi.sizeof(ctype), name
        assert [m["name"] for m in btf["members"]] == [f for f, _ in ffi.typeof(ctype).fields], name
        for m in btf["members"]:
            assert m["bits_offset"] == 8 * ffi.offsetof(ctype, m["name"]), (name, m["name"])
