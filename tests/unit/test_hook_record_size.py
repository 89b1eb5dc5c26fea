"""Hook records come from the kernel cut after their last used slot
(submit_hook in csrc/bpf/lib/common.bpf.h): the decoder takes exactly those
bytes and refuses a record that ends before its arguments do."""
import pytest

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.decode import DecodeError, decode, records_layout_id

DATA = ffi.offsetof("struct th_hook_event", "data")
SLOT = lib.TH_STR_SLOT


def record(args: dict[int, bytes], ret: bytes = b"") -> bytes:
    """A hook record as submit_hook sends it: up to the end of the last used slot."""
    p = ffi.new("struct th_hook_event *")
    p.hdr.op = lib.TH_OP_HOOK
    p.pid = p.tid = 4242
    p.hook_id, p.syscall_nr, p.ima_algo = 7, 121, -1
    p.kernel_stack_id = p.user_stack_id = -1
    end = 0
    for i, raw in args.items():
        p.arg_len[i] = len(raw)
        ffi.memmove(p.data + i * SLOT, raw, len(raw))
        end = max(end, i * SLOT + len(raw))
    if ret:
        p.ret_len = len(ret)
        p.flags = lib.TH_HOOK_HAS_RETURN
        ffi.memmove(p.data + lib.TH_RET_SLOT * SLOT, ret, len(ret))
        end = lib.TH_RET_SLOT * SLOT + len(ret)
    p.hdr.size = DATA + end
    return bytes(ffi.buffer(p))[:DATA + end]


def test_one_integer_argument_is_a_small_record():
    buf = record({0: (5).to_bytes(8, "little")})
    assert len(buf) == DATA + 8 < ffi.sizeof("struct th_hook_event") // 8
    rec = decode(buf)
    assert rec.args[0] == (5).to_bytes(8, "little") and rec.args[1:] == [b""] * 4
    assert rec.pid == 4242 and rec.hook_id == 7 and rec.ret_raw == b""


def test_unused_slots_before_the_last_used_one_are_empty():
    buf = record({0: b"/etc/shadow", 3: (1).to_bytes(8, "little")})
    rec = decode(buf)
    assert rec.args == [b"/etc/shadow", b"", b"", (1).to_bytes(8, "little"), b""]


def test_return_slot_counts_as_used():
    tuple_bytes = bytes(range(40))
    rec = decode(record({0: b"x" * 8}, ret=tuple_bytes))
    assert rec.ret_raw == tuple_bytes


def test_a_full_slot_is_kept_whole():
    rec = decode(record({4: b"a" * SLOT}))
    assert rec.args[4] == b"a" * SLOT


@pytest.mark.parametrize("args,ret", [({0: b"x" * 8}, b""), ({2: b"/tmp/file"}, b""), ({0: b"y" * 8}, b"z" * 40)])
def test_a_record_ending_inside_its_arguments_is_refused(args, ret):
    buf = record(args, ret)
    with pytest.raises(DecodeError, match=rf"hook record of {len(buf) - 1} bytes, its arguments end at byte {len(buf)}"):
        decode(buf[:-1])


def test_shorter_than_the_fixed_part_is_refused():
    with pytest.raises(DecodeError, match="fixed part"):
        decode(record({})[:DATA - 1])


def test_layout_id_names_the_cut_records():
    """A pinned ring buffer of a build that sent whole records must not be
    taken for ours (tetrahost/sensors/pins.py compares this id)."""
    assert records_layout_id() != "7f5b498b5dfeb932"       # builds that sent whole hook records (402cfbf)
