"""Hook records carry only the argument bytes they use (hook_event_size in
csrc/bpf/lib/common.bpf.h): the decoder takes a record cut after its last used
slot and refuses one cut before it; and the hot path's encoder writes the
standard library's text."""
import json

import pytest

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.decode import DecodeError, decode
from tetrahost.export.encode import dumps

DATA = ffi.offsetof("struct th_hook_event", "data")


def record(lens: dict[int, int], ret_len: int = 0) -> bytes:
    p = ffi.new("struct th_hook_event *")
    p.hdr.op = lib.TH_OP_HOOK
    p.pid, p.tid, p.hook_id, p.syscall_nr = 10, 11, 7, -1
    for i, n in lens.items():
        p.arg_len[i] = n
        ffi.memmove(p.data + i * lib.TH_STR_SLOT, bytes([65 + i]) * n, n)
    p.ret_len = ret_len
    return bytes(ffi.buffer(p))


def cut(buf: bytes, lens: dict[int, int], ret_len: int = 0) -> bytes:
    """What the kernel sends: up to the end of the last used slot."""
    end = max([i * lib.TH_STR_SLOT + n for i, n in lens.items() if n] or [0])
    if ret_len:
        end = lib.TH_RET_SLOT * lib.TH_STR_SLOT + ret_len
    return buf[:DATA + end]


@pytest.mark.parametrize("lens", [{}, {0: 8}, {0: 8, 2: 30}, {1: 256, 4: 3}])
def test_cut_records_decode_to_the_same_arguments(lens):
    full = record(lens)
    short = cut(full, lens)
    assert len(short) < len(full)
    a, b = decode(full), decode(short)
    assert a == b
    assert [len(x) for x in b.args] == [lens.get(i, 0) for i in range(5)]
    assert b.args[max(lens or {0: 0})] == (bytes([65 + max(lens)]) * lens[max(lens)] if lens else b"")


def test_one_int_argument_is_a_small_record():
    assert len(cut(record({0: 8}), {0: 8})) == DATA + 8 < 200


def test_a_record_cut_inside_its_arguments_is_refused():
    lens = {0: 8, 2: 30}
    with pytest.raises(DecodeError, match="arguments end at byte"):
        decode(cut(record(lens), lens)[:-1])
    with pytest.raises(DecodeError, match="fixed part"):
        decode(record({})[:DATA - 1])


def test_return_slot_is_kept():
    buf = cut(record({0: 8}, ret_len=40), {0: 8}, ret_len=40)
    assert len(decode(buf).ret_raw) == 40
    with pytest.raises(DecodeError):
        decode(buf[:-1])


@pytest.mark.parametrize("value", ["plain", "del\x7f", "é ü", "\x00\x1f", {"a": [1, "x\u2028"]}, 1 << 70,
                                   {"k": (1, 2)}, "\\x41"])
def test_encoder_writes_the_standard_librarys_text(value):
    assert dumps(value) == json.dumps(value, ensure_ascii=True, separators=(",", ":"))
