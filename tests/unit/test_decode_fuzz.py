"""Fuzzing the kernel-record decoder and what renders its output.

Records are built with the cffi structs of csrc/events.h (the kernel's
layout), then mutated: bytes flipped, truncated, extended, op byte and
length fields replaced, or replaced by random bytes.  decode() must return a
record or raise DecodeError -- never IndexError, struct.error, UnicodeError,
MemoryError...: a bad record is counted and dropped, it must not stop the
agent's loop.  What decodes is then rendered to JSON (process cache +
TetragonJSON for exec/fork/exit, every argument kind for hook records) and
to a compact line, which must not raise either and must give valid UTF-8.

Fixed seed, time budget FUZZ_SECONDS (a few seconds; raise it by hand for a
longer run: TETRAHOST_FUZZ_SECONDS=300).
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.decode import DecodeError, decode
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.events.proccache import ProcessCache
from tetrahost.events.records import ExecRecord, ExitRecord, ForkRecord, HookRecord
from tetrahost.export.compact import CompactError, format_line
from tetrahost.export.arg_json import render_arg
from tetrahost.export.tetragon_json import TetragonJSON

FUZZ_SECONDS = float(os.environ.get("TETRAHOST_FUZZ_SECONDS", "3"))
SEED = 0x7E7A
HOST = tuple(4026531830 + i for i in range(10))
ARG_KINDS = [v for k, v in vars(lib).items() if k.startswith("TH_ARG_") and isinstance(v, int)
             and k != "TH_ARG_NONE" and v < 64]


@dataclass(frozen=True)
class FakeArg:
    """The fields of tetrahost.policy.model.Arg that rendering reads."""
    base_type: str
    bits: int = 0
    signed: bool = False
    label: str = ""


ARG_SPECS = [FakeArg("int32", 32, True), FakeArg("uint64", 64), FakeArg("capability", 32, True),
             FakeArg("kernel_cap_t", 64), FakeArg("uint8", 8, label="l\x1b"), FakeArg("file")]


def blob(rng: random.Random, n: int) -> bytes:
    pool = [b"/usr/bin/", b"\xff", b"\x1b[2J", b"\n", b"\\x", b"\xc3\xa9", b"\0", b" ", b'"', b"a"]
    out = b"".join(rng.choice(pool) for _ in range(n))
    return out


def exec_record(rng: random.Random) -> bytes:
    p = ffi.new("struct th_exec *")
    p.hdr.op = lib.TH_OP_EXEC
    p.hdr.ktime = rng.getrandbits(64)
    p.pid, p.tid, p.ppid = rng.randint(1, 1 << 22), rng.randint(1, 1 << 22), rng.randint(0, 1 << 22)
    p.auid = rng.getrandbits(32)
    p.parent_ktime = rng.getrandbits(64)
    p.cgroup_id = rng.getrandbits(64)
    p.caps.effective, p.caps.permitted = rng.getrandbits(64), rng.getrandbits(64)
    for i in range(10):
        p.ns[i] = rng.choice((0, HOST[i], rng.getrandbits(32)))
    p.flags = rng.getrandbits(32)
    path, args, cwd = blob(rng, rng.randint(0, 8)), blob(rng, rng.randint(0, 20)), blob(rng, rng.randint(0, 6))
    p.path_len, p.args_len, p.cwd_len = len(path), len(args), len(cwd)
    data = path + args + cwd
    ffi.memmove(p.data, data, len(data))
    end = ffi.offsetof("struct th_exec", "data") + len(data)
    p.hdr.size = end
    return bytes(ffi.buffer(p))[:end]


def fixed_record(rng: random.Random, ctype: str, op: int) -> bytes:
    p = ffi.new(f"{ctype} *")
    p.hdr.op = op
    p.hdr.ktime = rng.getrandbits(64)
    p.hdr.size = ffi.sizeof(ctype)
    p.pid, p.tid = rng.randint(0, 1 << 22), rng.randint(0, 1 << 22)
    if op == lib.TH_OP_EXIT:
        p.exit_code, p.start_ktime = rng.getrandbits(32), rng.getrandbits(64)
    else:
        p.ppid, p.parent_ktime = rng.randint(0, 1 << 22), rng.getrandbits(64)
    return bytes(ffi.buffer(p))


def hook_record(rng: random.Random) -> bytes:
    p = ffi.new("struct th_hook_event *")
    p.hdr.op = lib.TH_OP_HOOK
    p.hdr.size = ffi.sizeof("struct th_hook_event")
    p.pid, p.tid, p.hook_id = rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32)
    p.selector, p.action, p.flags = rng.getrandbits(8), rng.getrandbits(8), rng.getrandbits(8)
    p.action_arg, p.retval = rng.getrandbits(63), -rng.getrandbits(63)
    p.syscall_nr = rng.randint(-1, 500)
    for i in range(5):
        p.arg_len[i] = rng.choice((0, 8, 255, 256, rng.getrandbits(16)))
    p.ret_len = rng.getrandbits(16)
    data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 1536)))
    ffi.memmove(p.data, data, len(data))
    return bytes(ffi.buffer(p))


def mutate(rng: random.Random, rec: bytes) -> bytes:
    buf = bytearray(rec)
    for _ in range(rng.randint(1, 4)):
        how = rng.randrange(8)
        if how == 0 and buf:                                      # flip bytes
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] = rng.getrandbits(8)
        elif how == 1:                                            # truncate
            del buf[rng.randint(0, len(buf)):]
        elif how == 2:                                            # extend
            buf += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
        elif how == 3 and buf:                                    # another op
            buf[0] = rng.choice((0, 1, 2, 3, 4, 5, 255, rng.getrandbits(8)))
        elif how == 4 and len(buf) > 8:                           # a 16-bit length field anywhere
            at = rng.randrange(len(buf) - 2)
            buf[at:at + 2] = rng.choice((0xFFFF, 0x8000, 0, 1, len(buf))).to_bytes(2, "little")
        elif how == 5 and len(buf) > 8:                           # header size field
            buf[4:8] = rng.getrandbits(32).to_bytes(4, "little")
        elif how == 6:                                            # cut inside the fixed part
            del buf[rng.randint(0, min(len(buf), 160)):]
        else:                                                     # all random
            buf = bytearray(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 7, 16, 64, 200, 2000))))
    return bytes(buf)


def check_json(line: str) -> None:
    line.encode("utf-8", "strict")
    # No lone surrogate in any decoded string (a \\ud8xx\\udcxx pair is a valid character).
    json.dumps(json.loads(line), ensure_ascii=False).encode("utf-8", "strict")
    try:
        compact = format_line(line)
    except CompactError:
        return
    assert "\n" not in compact and "\x1b" not in compact


def render(record, cache: ProcessCache, renderer: TetragonJSON, rng: random.Random) -> None:
    if isinstance(record, (ExecRecord, ForkRecord, ExitRecord)):
        event = cache.handle(record)
        if event is not None:
            check_json(renderer.render(event))
    elif isinstance(record, HookRecord):
        for raw in record.args + [record.ret_raw]:
            kind = rng.choice(ARG_KINDS)
            out = render_arg(kind, rng.choice(ARG_SPECS), raw, None)
            assert isinstance(out, dict)
            check_json(json.dumps({"process_kprobe": {"process": {"binary": "/x"}, "args": [out]}},
                                  ensure_ascii=True))
    else:
        raise AssertionError(f"decode returned {record!r}")


def test_decoder_and_renderers_survive_mutated_records():
    rng = random.Random(SEED)
    weird_cgroups = [os.fsdecode(b"/sys\xff/\x1b[2J"), "/system.slice/a\\x2db.service", "", None]
    cache = ProcessCache("host1", max_entries=4096,
                         cgroup_path_for=lambda cid: weird_cgroups[cid % len(weird_cgroups)])
    renderer = TetragonJSON("host1", HostNamespaces(HOST), boot_offset_ns=0)
    makers = [exec_record, hook_record,
              lambda r: fixed_record(r, "struct th_fork", lib.TH_OP_FORK),
              lambda r: fixed_record(r, "struct th_exit", lib.TH_OP_EXIT)]
    decoded: dict[str, int] = {}
    rejected = runs = 0
    deadline = time.monotonic() + FUZZ_SECONDS
    while time.monotonic() < deadline:
        runs += 1
        original = rng.choice(makers)(rng)
        buf = original if rng.random() < 0.1 else mutate(rng, original)
        try:
            record = decode(buf)
        except DecodeError:
            rejected += 1
            continue
        except Exception as exc:                                  # the bug this test is for
            raise AssertionError(f"run {runs}: decode raised {exc!r} on {buf.hex()}") from exc
        decoded[type(record).__name__] = decoded.get(type(record).__name__, 0) + 1
        try:
            render(record, cache, renderer, rng)
        except Exception as exc:
            raise AssertionError(f"run {runs}: rendering {record!r} raised {exc!r}") from exc
    # The fuzzing reached both outcomes for every record type.
    assert runs > 500 and rejected > 50, (runs, rejected)
    assert set(decoded) == {"ExecRecord", "ForkRecord", "ExitRecord", "HookRecord"}, decoded
