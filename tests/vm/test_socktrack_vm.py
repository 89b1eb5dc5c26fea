"""TrackSock / UntrackSock on Debian's 6.1 kernel.

A server process accepts on two ports; only accepts on TRACKED are tracked
(inet_csk_accept's returned sock, returnArgAction TrackSock).  The client,
this test, then sends on both connections.  On loopback the server side's
tcp_rcv_established runs in the sender's context, so without tracking the
event names the client; with tracking it must name the server.  The
untracked port is the control.  Closing the tracked socket (tcp_close,
UntrackSock) drops it from the owner map.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from agent_harness import RunningAgent, with_host

TRACKED, UNTRACKED = 47101, 47102

POLICY = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: sock-owners
spec:
  kprobes:
  - call: inet_csk_accept
    syscall: false
    return: true
    args:
    - index: 0
      type: sock
    returnArg:
      index: 0
      type: sock
    returnArgAction: TrackSock
    selectors:
    - matchArgs:
      - index: 0
        operator: SPort
        values: ["{TRACKED}"]
  - call: tcp_rcv_established
    syscall: false
    args:
    - index: 0
      type: sock
    selectors:
    - matchArgs:
      - index: 0
        operator: SPort
        values: ["{TRACKED}", "{UNTRACKED}"]
  - call: tcp_close
    syscall: false
    args:
    - index: 0
      type: sock
    selectors:
    - matchArgs:
      - index: 0
        operator: SPort
        values: ["{TRACKED}"]
      matchActions:
      - action: UntrackSock
        argSock: 0
      - action: NoPost
"""

# accepts one connection per port, reads what arrives, closes when told (stdin)
SERVER = f"""
import socket, sys
ls = []
for port in ({TRACKED}, {UNTRACKED}):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen(); ls.append(s)
print("listening", flush=True)
conns = [s.accept()[0] for s in ls]
print("accepted", flush=True)
for c in conns:
    c.recv(100)
sys.stdin.readline()
for c in conns:
    c.close()
print("closed", flush=True)
"""


def owner_map() -> dict:
    out = subprocess.run(["bpftool", "-j", "map", "dump", "name", "socktrack"], capture_output=True,
                         text=True, check=True).stdout
    return {int.from_bytes(bytes(int(b, 16) for b in e["key"]), "little"): e for e in json.loads(out)}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    d = tmp_path_factory.mktemp("socktrack")
    (d / "p.yaml").write_text(POLICY)
    a = RunningAgent(d, "--policy", str(d / "p.yaml"))
    yield a
    a.stop()


def test_events_on_a_tracked_socket_name_its_owner(agent):
    assert "not active" not in agent.log_text().lower()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        clients = [socket.create_connection(("127.0.0.1", port)) for port in (TRACKED, UNTRACKED)]
        assert server.stdout.readline().strip() == "accepted"
        for c in clients:
            c.sendall(b"x" * 10)
        def rcv(port):
            return [with_host(e) for e in agent.events()
                    if e.get("process_kprobe", {}).get("function_name") == "tcp_rcv_established"
                    and e["process_kprobe"]["args"][0]["sock_arg"].get("sport") == port]
        agent.wait_events(lambda e: e.get("process_kprobe", {}).get("function_name") == "tcp_rcv_established",
                          2)
        deadline = time.monotonic() + 30
        while not (rcv(TRACKED) and rcv(UNTRACKED)) and time.monotonic() < deadline:
            time.sleep(0.2)
        tracked, untracked = rcv(TRACKED), rcv(UNTRACKED)
        # the accept on TRACKED: its returned sock, tracked to the server
        accept = [e["process_kprobe"] for e in agent.events()
                  if e.get("process_kprobe", {}).get("function_name") == "inet_csk_accept"]
        assert len(accept) == 1 and accept[0]["process"]["pid"] == server.pid
        assert accept[0]["return"]["sock_arg"]["sport"] == TRACKED
        cookie = accept[0]["return"]["sock_arg"]["cookie"]          # uint64: a JSON string
        assert int(cookie) in owner_map()
        # data into both server sockets arrived in the client's context:
        assert tracked and all(e["process"]["pid"] == server.pid and e.get("socket_owner") for e in tracked)
        assert tracked[0]["args"][0]["sock_arg"]["cookie"] == cookie
        # untracked: no owner named; the event has whichever task the kernel ran it in, the
        # sender's (softirq on its send) or the server's (a packet that found the socket
        # locked by the server waits in its backlog until the server releases it)
        assert untracked and all(e["process"]["pid"] in (os.getpid(), server.pid) and "socket_owner" not in e
                                 for e in untracked)
        # UntrackSock at tcp_close
        server.stdin.write("close\n")
        server.stdin.flush()
        assert server.stdout.readline().strip() == "closed"
        for c in clients:
            c.close()
        assert int(cookie) not in owner_map()
    finally:
        server.kill()
        server.wait()
