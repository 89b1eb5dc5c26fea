"""Fuzzing the control socket's frame reader and dispatcher in-process.

A fixed-seed generator (reproducible: a failure names its seed and round)
mutates valid requests (wrong types, unknown ops and fields, broken JSON,
truncation, huge sizes, NUL and non-UTF-8 bytes) and feeds them, split at
random points as a socket would deliver them, to ControlServer.feed.
Whatever arrives, nothing may raise out of the server, every reply must be a
structured {"version":1,"ok":...} line (never an "internal error", which
would mean an exception escaped an op), and a connection ends only by the
server's choice.
"""
from __future__ import annotations

import copy
import json
import random
import time

from control_fakes import connect, make_server, read_lines
from tetrahost.control import protocol

SEED = 20240611
BUDGET = 3.0        # seconds

VALID = [
    {"version": 1, "op": "status"},
    {"version": 1, "op": "policy_list"},
    {"version": 1, "op": "getevents", "filter": {"binary": ["^/usr"], "pids": [1, 2], "process_only": True}},
    {"version": 1, "op": "getevents", "filter": {"event_types": ["PROCESS_EXEC"], "units": ["a*"]}},
    {"version": 1, "op": "policy_add", "filename": "p.yaml", "content": "apiVersion: x\n"},
    {"version": 1, "op": "policy_delete", "name": "p"},
]
ODD_VALUES = [None, True, False, 0, -1, 2**70, 1.5, float("nan"), "", "x" * 300, [], [None], [1, "a"],
              {}, {"a": {"b": []}}, "\udcff", "(", "[", "\x00", ["(unclosed"], [True], [""], {"pids": "1"}]


def mutate(rng: random.Random, req: dict) -> dict:
    req = copy.deepcopy(req)
    for _ in range(rng.randint(1, 3)):
        target = req
        if "filter" in req and isinstance(req["filter"], dict) and rng.random() < 0.5:
            target = req["filter"]
        keys = list(target) + ["version", "op", "filter", "binary", "pids", "event_types", "bogus"]
        key = rng.choice(keys)
        if rng.random() < 0.2:
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(rng.choice(ODD_VALUES + [rng.choice(protocol.OPS)]))
    return req


def frame(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.45:
        text = json.dumps(mutate(rng, rng.choice(VALID)), allow_nan=True)
        data = text.encode("utf-8", "surrogatepass")
    elif r < 0.6:
        data = json.dumps(rng.choice(VALID)).encode()
        cut = rng.randrange(len(data))
        data = data[:cut] + bytes(rng.randrange(256) for _ in range(rng.randint(0, 4))) + data[cut + 1:]
    elif r < 0.7:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))).replace(b"\n", b"")
    elif r < 0.8:
        data = json.dumps(rng.choice(ODD_VALUES + [[1] * 50, "status"])).encode()
    elif r < 0.85:
        data = b"[" * rng.randint(1000, 200000)            # deep nesting
    elif r < 0.9:
        data = b'{"version":1,"op":"policy_add","filename":"a.yaml","content":"' + b"z" * rng.choice(
            [protocol.MAX_FRAME - 100, protocol.MAX_FRAME, protocol.MAX_FRAME + 5000]) + b'"}'
    else:
        data = json.dumps(rng.choice(VALID)).encode()[: rng.randint(0, 30)]   # truncated
    return data + (b"\n" if rng.random() < 0.95 else b"")


def check_replies(lines: list[bytes], where: str) -> None:
    for line in lines:
        msg = json.loads(line)
        if "event" in msg or "dropped" in msg:
            continue
        assert msg["version"] == protocol.VERSION and isinstance(msg["ok"], bool), (where, line[:200])
        if not msg["ok"]:
            assert isinstance(msg["error"], str) and "internal error" not in msg["error"], (where, line[:300])


def test_random_frames_never_escape_the_server():
    rng = random.Random(SEED)
    server, agent = make_server()
    peer, client = connect(server)
    deadline = time.monotonic() + BUDGET
    rounds = closed_by_server = 0
    while time.monotonic() < deadline:
        rounds += 1
        data = b"".join(frame(rng) for _ in range(rng.randint(1, 4)))
        pos = 0
        while pos < len(data) and client in server.clients.values():
            step = rng.choice([1, 7, 100, 4096, 65536])
            server.feed(client, data[pos:pos + step])     # must not raise
            pos += step
            lines, _ = read_lines(peer)
            check_replies(lines, f"seed {SEED} round {rounds}")
            agent.pump()
        lines, closed = read_lines(peer)
        check_replies(lines, f"seed {SEED} round {rounds}")
        if client not in server.clients.values() or client.stream:
            closed_by_server += client not in server.clients.values()
            peer.close()
            server._close(client)
            peer, client = connect(server)
    assert rounds > 100, rounds
    assert closed_by_server > 0          # the generator does reach the frame limit
    assert server.too_large > 0
