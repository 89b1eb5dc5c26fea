"""The libbpf binding on this machine's kernel: load errors, maps, pinning,
ring buffer integration, deterministic cleanup."""
from __future__ import annotations

import errno
import os
import pathlib
import select
import shutil
import subprocess
import time
import uuid

import pytest

from tetrahost.bpf import BpfError, BpfObject, RingBuffer
from tetrahost.bpf.native import lib
from tetrahost.sensors.mounts import ensure_mounted

REPO = pathlib.Path(__file__).resolve().parents[2]
OBJ = REPO / "build" / "bpf"

pytestmark = pytest.mark.kernel

BAD_PROGRAM = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
struct {
	__uint(type, BPF_MAP_TYPE_HASH);   /* a hash lookup may return NULL */
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("raw_tp/sys_enter")
int unchecked(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&counts, &key);

	return *v;              /* no NULL check: the verifier must refuse this */
}
"""


@pytest.fixture(autouse=True)
def root():
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF programs")
    ensure_mounted()


def only(obj: BpfObject, name: str) -> BpfObject:
    for p in obj.programs.values():
        p.autoload = p.name == name
    return obj


def test_verifier_rejection_carries_errno_and_full_log(tmp_path):
    if not shutil.which("clang"):
        pytest.fail("clang is needed to build the test program (make deps)")
    src = tmp_path / "bad.bpf.c"
    src.write_text(BAD_PROGRAM)
    out = tmp_path / "bad.bpf.o"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86",
                    f"-I{REPO}/csrc/include/x86", "-c", str(src), "-o", str(out)], check=True)
    with BpfObject(out) as obj:
        with pytest.raises(BpfError) as info:
            obj.load()
    err = info.value
    assert err.errno in (errno.EACCES, errno.EINVAL)
    assert any("invalid mem access" in line for line in err.log), err.full_log
    summary = str(err)
    assert "load bad.bpf.o" in summary and len(summary.splitlines()) <= 1 + BpfError.SUMMARY_LINES
    assert len(err.full_log) > len(summary)


def test_missing_program_and_map_names_say_what_exists():
    with BpfObject(OBJ / "generic.bpf.o") as obj:
        with pytest.raises(KeyError, match="th_kprobe"):
            obj.program("nope")
        with pytest.raises(KeyError, match="hook_config"):
            obj.map("nope")


def test_hash_map_update_lookup_iterate_delete_and_percpu():
    with only(BpfObject(OBJ / "generic.bpf.o"), "th_sys_enter") as obj:
        obj.load()
        m = obj.map("str_equal")
        keys = [bytes([i]) * m.key_size for i in range(1, 4)]
        for k in keys:
            m.update(k, b"\x01")
        assert sorted(m.keys()) == sorted(keys)
        assert m.lookup(keys[0]) == b"\x01"
        assert m.delete(keys[0]) is True and m.delete(keys[0]) is False
        assert m.lookup(keys[0]) is None
        losses = obj.map("losses").typed("uint32_t", "uint64_t")
        per_cpu = losses.lookup(1)
        assert len(per_cpu) == lib.libbpf_num_possible_cpus()     # one value per possible CPU
        assert losses.sum_per_cpu(1) == 0
        with pytest.raises(TypeError):
            obj.map("losses").typed("uint64_t", "uint64_t")   # key is 4 bytes


def test_pin_and_unpin(tmp_path):
    pin = "/sys/fs/bpf/tetrahost-test-pin"
    with only(BpfObject(OBJ / "generic.bpf.o"), "th_sys_enter") as obj:
        obj.load()
        m = obj.map("hook_config")
        m.pin(pin)
        try:
            assert os.path.exists(pin)
        finally:
            m.unpin(pin)
        assert not os.path.exists(pin)


def test_ring_buffer_consume_stops_at_its_limit_and_loses_nothing():
    """consume(limit) hands over at most limit records per call; the rest stay
    in the ring for the next call, none skipped or handed twice."""
    seen = []
    obj = BpfObject(OBJ / "process.bpf.o").load()
    rb = RingBuffer(obj.map("events"), seen.append)
    link = obj.program("on_exec").attach()
    try:
        marker = f"th-consume-{uuid.uuid4().hex}"
        subprocess.run(["sh", "-c", f"i=0; while [ $i -lt 40 ]; do /bin/true {marker}; i=$((i+1)); done"],
                       check=True)
        link.destroy()            # nothing more arrives: the ring holds what we count below
        counts = []
        while True:
            n = rb.consume(7)
            counts.append(n)
            if n < 7:
                break
        assert max(counts) == 7 and len(counts) > 1
        assert sum(counts) == len(seen)
        assert rb.consume() == 0
        mine = [r for r in seen if b"/bin/true\0" + marker.encode() in r]     # not the shell itself
        assert len(mine) == 40, f"{len(mine)} of our 40 execs handed over"
        assert len(set(seen)) == len(seen)          # none twice (each record has its own ktime)
    finally:
        link.destroy()
        rb.close()
        obj.close()


def test_a_deferred_ring_buffer_keeps_what_was_read_until_it_is_committed():
    """What one reader read but did not commit is still in the ring for the
    next reader (the next agent after a kill -9); once committed, it is not."""
    obj = BpfObject(OBJ / "process.bpf.o").load()
    link = obj.program("on_exec").attach()
    first_seen, second_seen, third_seen = [], [], []
    first = RingBuffer(obj.map("events"), first_seen.append, deferred=True)
    try:
        marker = f"th-deferred-{uuid.uuid4().hex}"
        for _ in range(5):
            subprocess.run(["/bin/true", marker], check=True)
        link.destroy()
        assert first.consume() >= 5 and first.uncommitted_bytes() > 0
        mine = [r for r in first_seen if marker.encode() in r]
        assert len(mine) == 5
        pos = first.read_pos
        first.close()                           # "killed" before it committed

        second = RingBuffer(obj.map("events"), second_seen.append, deferred=True)
        assert second.consume() == len(first_seen)
        assert second_seen == first_seen        # the same records, in order
        assert second.read_pos == pos
        second.commit()
        second.close()

        third = RingBuffer(obj.map("events"), third_seen.append, deferred=True)
        assert third.consume() == 0 and not third.unread()
        third.close()
    finally:
        link.destroy()
        first.close()
        obj.close()


def dozing_reader(obj: BpfObject) -> RingBuffer:
    """A reader of the process object's ring that has read everything and
    asked to be woken (other processes of the host exec too: until a doze
    finds nothing new)."""
    rb = RingBuffer(obj.map("events"), lambda raw: None)
    rb.sleep_flag(obj.map("ring_ctl"))
    for _ in range(100):
        rb.consume()
        if rb.doze():
            return rb
    rb.close()
    pytest.fail("the host never let the ring buffer go quiet")


def asleep_flag(obj: BpfObject) -> int:
    return obj.map("ring_ctl").typed("uint32_t", "struct th_ring_ctl").lookup(0).asleep


def test_a_dozing_reader_is_woken_by_the_next_record():
    """An idle agent sleeps without a timer (tetrahost/daemon.py): after
    doze() the next record must wake wake_fd, though records are submitted
    without a wake-up (csrc/bpf/lib/common.bpf.h) and one exec is far from
    the TH_WAKEUP_BYTES that wakes the reader too.  The waker clears the flag."""
    obj = BpfObject(OBJ / "process.bpf.o").load()
    link = obj.program("on_exec").attach()
    rb = dozing_reader(obj)
    try:
        waker = select.epoll()
        waker.register(rb.wake_fd, select.EPOLLIN)
        assert asleep_flag(obj) == 1
        subprocess.run(["/bin/true"], check=True)
        assert waker.poll(5), "one exec after doze() woke nobody"
        assert asleep_flag(obj) == 0
        assert 0 < rb.unread_bytes() < lib.TH_WAKEUP_BYTES
        assert rb.consume() >= 1        # the wake-up's own empty record is stepped over
    finally:
        link.destroy()
        rb.close()
        obj.close()


def test_doze_refuses_while_records_wait_unread():
    """Records written before the flag was set woke nobody: doze() must see
    them (it looks at the ring after setting the flag) and say read them first."""
    obj = BpfObject(OBJ / "process.bpf.o").load()
    link = obj.program("on_exec").attach()
    rb = dozing_reader(obj)
    try:
        rb.consume()
        subprocess.run(["/bin/true"], check=True)
        rb.clear_wake()
        # the flag was set: that exec woke the reader and cleared it; this one did not
        subprocess.run(["/bin/true"], check=True)
        assert rb.unread()
        assert not rb.doze()
        assert asleep_flag(obj) == 0
    finally:
        link.destroy()
        rb.close()
        obj.close()


def test_ring_buffer_fd_becomes_readable_and_close_detaches():
    seen = []
    obj = BpfObject(OBJ / "process.bpf.o").load()
    rb = RingBuffer(obj.map("events"), seen.append)
    link = obj.program("on_exec").attach()
    prog_id = prog_id_of(obj.program("on_exec").fd)
    try:
        # records are submitted without waking the consumer until 64 KiB wait
        # (csrc/bpf/lib/common.bpf.h; this reader never dozed): a few execs
        # are there without a wake-up...
        subprocess.run(["/bin/true"], check=True)
        assert rb.consume() >= 1 and seen
        # ...and a burst larger than that wakes the epoll fd
        subprocess.run(["sh", "-c", "i=0; while [ $i -lt 600 ]; do /bin/true; i=$((i+1)); done"], check=True)
        readable, _, _ = select.select([rb.fd], [], [], 5)
        assert readable, "the ring buffer's epoll fd never became readable"
        assert rb.consume() >= 500
    finally:
        link.destroy()
        rb.close()
        obj.close()
    assert not link.attached
    with pytest.raises(ValueError):
        rb.consume()
    # the program is gone from the kernel once nothing holds it (freed after an RCU grace period)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        gone = subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True, text=True)
        if gone.returncode != 0:
            break
        time.sleep(0.1)
    assert gone.returncode != 0, f"program {prog_id} still loaded after close: {gone.stdout}"


def prog_id_of(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("prog_id:"):
                return int(line.split()[1])
    raise AssertionError("no prog_id in fdinfo")
