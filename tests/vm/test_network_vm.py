"""Network arguments, address/port selectors and connect enforcement on Debian's 6.1 kernel.

Two network namespaces joined by a veth pair (built with pyroute2) stand in
for hosts: th-a (the clients: 10.1.0.1, 192.168.77.1, fd00:1::1) and th-b
(the servers: 10.1.0.2, 192.168.77.2, fd00:1::2, fd00:1::3).  No other
address is ever used.  Every policy is scoped to th-a's network namespace
(matchNamespaces Net) and to its own ports, so the policies cannot see each
other's traffic or anything else in the guest.  One agent for the module.
"""
from __future__ import annotations

import errno
import os
import signal
import socket

import pytest

from agent_harness import policy_text, RunningAgent, with_host

try:    # a dependency of tetrahost (pyproject): missing means a broken venv, not a skip
    import pyroute2  # noqa: F401
except ImportError:
    pytest.fail("pyroute2 is not installed in the venv (make build installs it)", pytrace=False)
from pyroute2 import IPRoute, netns  # noqa: E402

from tetrahost.events.netns import NetnsResolver  # noqa: E402
from tetrahost.export.compact import format_event  # noqa: E402

NS_A, NS_B = "th-a", "th-b"
IFA_F_NODAD = 0x02
ADDRS = {NS_A: ("tha0", ["10.1.0.1/24", "192.168.77.1/24", "fd00:1::1/64"]),
         NS_B: ("thb0", ["10.1.0.2/24", "192.168.77.2/24", "fd00:1::2/64", "fd00:1::3/64"])}

# TCP servers in th-b: (address, port)
SERVERS = [("10.1.0.2", 9200), ("10.1.0.2", 7001), ("192.168.77.2", 7001), ("10.1.0.2", 8002),
           ("192.168.77.2", 8001), ("fd00:1::2", 9101), ("fd00:1::3", 9101), ("fd00:1::2", 9150),
           ("10.1.0.2", 9101)]


def policies(ino_a: int) -> dict[str, str]:
    scope = f"""      matchNamespaces:
      - namespace: Net
        operator: In
        values: ["{ino_a}"]
"""
    return {
        # every connect to port 9200 from th-a: the exact tuple
        "net-connect": f"""
  kprobes:
  - call: tcp_connect
    syscall: false
    args:
    - index: 0
      type: sock
    selectors:
    - matchArgs:
      - index: 0
        operator: DPort
        values: ["9200"]
{scope}""",
        # Tetragon's "only private addresses" idea, narrowed to 10.0.0.0/8 and ports 7000-7099
        "net-kill": f"""
  kprobes:
  - call: tcp_connect
    syscall: false
    args:
    - index: 0
      type: sock
    selectors:
    - matchArgs:
      - index: 0
        operator: NotDAddr
        values: ["10.0.0.0/8"]
      - index: 0
        operator: DPort
        values: ["7000:7099"]
{scope}      matchActions:
      - action: Sigkill
""",
        # Override at security_socket_connect (planned as BPF-LSM socket_connect):
        # the connect fails, no SYN is sent
        "net-override": f"""
  kprobes:
  - call: security_socket_connect
    syscall: false
    args:
    - index: 0
      type: socket
    - index: 1
      type: sockaddr
    - index: 2
      type: int
    selectors:
    - matchArgs:
      - index: 1
        operator: NotSAddr
        values: ["10.0.0.0/8"]
      - index: 1
        operator: SPort
        values: ["8000:8099"]
      - index: 0
        operator: Protocol
        values: ["IPPROTO_TCP"]
{scope}      matchActions:
      - action: Override
        argError: -111
""",
        # what reaches tcp_connect (where the SYN leaves) on ports 8000-8099
        "net-sent": f"""
  kprobes:
  - call: tcp_connect
    syscall: false
    args:
    - index: 0
      type: sock
    selectors:
    - matchArgs:
      - index: 0
        operator: DPort
        values: ["8000:8099"]
{scope}""",
        # IPv6 prefixes and port ranges, with exclusions
        "net-v6": f"""
  kprobes:
  - call: tcp_connect
    syscall: false
    args:
    - index: 0
      type: sock
    selectors:
    - matchArgs:
      - index: 0
        operator: DAddr
        values: ["fd00:1::/64"]
      - index: 0
        operator: NotDAddr
        values: ["fd00:1::3"]
      - index: 0
        operator: DPort
        values: ["9100:9199"]
      - index: 0
        operator: NotDPort
        values: ["9150"]
{scope}""",
        # UDP datagrams, from the packet itself
        "net-udp": f"""
  kprobes:
  - call: ip_send_skb
    syscall: false
    args:
    - index: 1
      type: skb
    selectors:
    - matchArgs:
      - index: 1
        operator: Protocol
        values: ["IPPROTO_UDP"]
      - index: 1
        operator: DAddr
        values: ["10.1.0.2/32"]
      - index: 1
        operator: DPort
        values: ["9300"]
{scope}""",
    }


def build_network() -> None:
    for name in (NS_A, NS_B):
        if name in netns.listnetns():
            netns.remove(name)
        netns.create(name)
    with IPRoute() as ipr:
        ipr.link("add", ifname="tha0", kind="veth", peer={"ifname": "thb0", "net_ns_fd": NS_B})
        ipr.link("set", index=ipr.link_lookup(ifname="tha0")[0], net_ns_fd=NS_A)
    for name, (dev, addrs) in ADDRS.items():
        with IPRoute(netns=name) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            index = ns.link_lookup(ifname=dev)[0]
            for a in addrs:
                addr, plen = a.split("/")
                extra = {"flags": IFA_F_NODAD} if ":" in addr else {}   # usable at once
                ns.addr("add", index=index, address=addr, prefixlen=int(plen), **extra)
            ns.link("set", index=index, state="up")


def sock_in(name: str, family=socket.AF_INET, kind=socket.SOCK_STREAM) -> socket.socket:
    """A socket created in network namespace `name` (it stays there)."""
    netns.pushns(name)
    try:
        return socket.socket(family, kind)
    finally:
        netns.popns()


def family_of(addr: str):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    build_network()
    servers = []
    for addr, port in SERVERS:
        s = sock_in(NS_B, family_of(addr))
        s.bind((addr, port))
        s.listen(16)
        servers.append(s)
    udp = sock_in(NS_B, socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("10.1.0.2", 9300))
    servers.append(udp)
    yield os.stat(f"/run/netns/{NS_A}").st_ino
    for s in servers:
        s.close()
    for name in (NS_A, NS_B):
        netns.remove(name)


@pytest.fixture(scope="module")
def agent(net, tmp_path_factory):
    d = tmp_path_factory.mktemp("policies")
    args = []
    for name, body in policies(net).items():
        (d / f"{name}.yaml").write_text(policy_text(name, body))
        args += ["--policy", str(d / f"{name}.yaml")]
    a = RunningAgent(tmp_path_factory.mktemp("agent"), *args)
    yield a
    a.stop()


def connect_from_a(addr: str, port: int) -> socket.socket:
    """Connect while this thread is in th-a: the policies match the task's
    network namespace (matchNamespaces Net), not only the socket's."""
    netns.pushns(NS_A)
    try:
        s = socket.socket(family_of(addr))
        s.settimeout(5)
        try:
            s.connect((addr, port))
        except BaseException:
            s.close()
            raise
        return s
    finally:
        netns.popns()


def child_connect(addr: str, port: int) -> int:
    """Connect from th-a in a forked child; its wait status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            netns.setns(NS_A, flags=0)
            s = socket.socket(family_of(addr))
            s.settimeout(5)
            s.connect((addr, port))
            s.close()
            code = 0
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def events_of(agent, name, count=1):
    """Whole events of policy `name`, once count arrived and every earlier one is in (settle)."""
    agent.wait_events(lambda e: any(v.get("policy_name") == name for k, v in e.items()
                                    if k.startswith("process_") and isinstance(v, dict)), count)
    agent.settle()
    return [e for e in agent.events() for k, v in e.items()
            if k.startswith("process_") and isinstance(v, dict) and v.get("policy_name") == name]


def body(event: dict) -> dict:
    return with_host(event)


def test_all_network_hooks_attach(agent):
    log = agent.log_text()
    assert "not active:" not in log, log
    assert "BPF-LSM socket_connect (Override returns the error)" in log
    assert "kprobe tcp_connect" in log and "kprobe ip_send_skb" in log


def test_connect_to_another_namespace_gives_one_event_with_the_exact_tuple(agent, net):
    s = connect_from_a("10.1.0.2", 9200)
    sport = s.getsockname()[1]
    s.close()
    (ev,) = events_of(agent, "net-connect")
    b = body(ev)
    assert b["function_name"] == "tcp_connect"
    assert b["args"] == [{"sock_arg": {
        "family": "AF_INET", "type": "SOCK_STREAM", "protocol": "IPPROTO_TCP",
        "saddr": "10.1.0.1", "daddr": "10.1.0.2", "sport": sport, "dport": 9200,
        "cookie": b["args"][0]["sock_arg"]["cookie"], "state": "TCP_SYN_SENT"}}]
    assert ev["tetrahost"]["args"]["0"] == {"netns": net, "netns_name": NS_A}     # export.host_fields
    assert b["process"]["ns"]["net"]["inum"] == net
    line = format_event(ev)
    assert line.startswith("🔌 connect ") and f"tcp 10.1.0.1:{sport} -> 10.1.0.2:9200" in line, line


def test_sigkill_outside_10_8_and_allowed_connect_untouched(agent):
    assert os.WIFEXITED(st := child_connect("10.1.0.2", 7001)) and os.WEXITSTATUS(st) == 0, st
    st = child_connect("192.168.77.2", 7001)
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL, st
    (ev,) = events_of(agent, "net-kill")
    b = body(ev)
    assert b["action"] == "KPROBE_ACTION_SIGKILL" and b["signal"] == "SIGKILL"
    assert b["args"][0]["sock_arg"]["daddr"] == "192.168.77.2"
    assert "-> 192.168.77.2:7001 💥 SIGKILL" in format_event(ev)


def test_override_refuses_connect_before_any_packet(agent):
    with pytest.raises(ConnectionRefusedError) as exc:
        connect_from_a("192.168.77.2", 8001)      # a server listens there: only the policy refuses
    assert exc.value.errno == errno.ECONNREFUSED
    connect_from_a("10.1.0.2", 8002).close()
    (ev,) = events_of(agent, "net-override")
    b = body(ev)
    assert b["action"] == "KPROBE_ACTION_OVERRIDE" and b["return_value"] == -111
    assert b["args"][1] == {"sockaddr_arg": {"family": "AF_INET", "addr": "192.168.77.2", "port": 8001}}
    assert b["args"][0]["sock_arg"]["protocol"] == "IPPROTO_TCP"
    assert "tcp -> 192.168.77.2:8001 ⛔ OVERRIDE" in format_event(ev)
    # tcp_connect (which sends the SYN) ran for the allowed connect only
    sent = events_of(agent, "net-sent")
    assert [body(e)["args"][0]["sock_arg"]["daddr"] for e in sent] == ["10.1.0.2"]


def test_ipv6_prefix_and_port_range_include_and_exclude(agent):
    for addr, port in (("fd00:1::3", 9101), ("fd00:1::2", 9150), ("10.1.0.2", 9101), ("fd00:1::2", 9101)):
        connect_from_a(addr, port).close()
    evs = events_of(agent, "net-v6")
    assert [(body(e)["args"][0]["sock_arg"]["daddr"], body(e)["args"][0]["sock_arg"]["dport"])
            for e in evs] == [("fd00:1::2", 9101)]
    sa = body(evs[0])["args"][0]["sock_arg"]
    assert sa["family"] == "AF_INET6" and sa["saddr"] == "fd00:1::1"


def test_udp_datagrams_seen_where_the_policy_asks(agent, net):
    netns.pushns(NS_A)
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x", ("10.1.0.2", 9301))
        s.sendto(b"hello", ("10.1.0.2", 9300))
        sport = s.getsockname()[1]
        s.close()
    finally:
        netns.popns()
    (ev,) = events_of(agent, "net-udp")
    skb = body(ev)["args"][0]["skb_arg"]
    assert (skb["family"], skb["protocol"], skb["saddr"], skb["sport"], skb["daddr"], skb["dport"]) == \
        ("AF_INET", "IPPROTO_UDP", "10.1.0.1", sport, "10.1.0.2", 9300)
    assert skb["len"] == 20 + 8 + 5
    assert format_event(ev).startswith("📦 datagram") and f"udp 10.1.0.1:{sport} -> 10.1.0.2:9300" in format_event(ev)


def test_interface_names_resolved_with_netlink(net):
    with IPRoute(netns=NS_A) as ns:
        index = ns.link_lookup(ifname="tha0")[0]
    r = NetnsResolver()
    assert r.name(net) == NS_A
    assert r.ifname(net, index) == "tha0"
    assert r.ifname(r.own, 1) == "lo"
