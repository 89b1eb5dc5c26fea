"""Ring space is released only up to what every threaded exporter wrote
(tetrahost/export/delivery.py), in order, and a stalled exporter cannot hold
it for ever."""
from __future__ import annotations

import threading

from tetrahost.export.delivery import Delivery
from tetrahost.export.filters import ExportPipeline
from tetrahost.export.sinks import SinkStats, ThreadedSink


class FakeRing:
    """read_pos moves as the test 'reads'; commits are recorded."""

    def __init__(self):
        self.read_pos = 0
        self.commits: list[int] = []

    def commit(self, pos):
        self.commits.append(pos)

    def uncommitted_bytes(self):
        return self.read_pos - (self.commits[-1] if self.commits else 0)


class GatedExporter:
    """Writes only when the test opens its gate, one write at a time."""

    def __init__(self, name="gated"):
        self.name = name
        self.stats = SinkStats()
        self.gate = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)
        self.lines: list[str] = []

    def write_events(self, batch):
        self.entered.release()
        self.gate.acquire(timeout=5)
        self.lines.extend(line for line, _ in batch)

    def close(self):
        pass


def batch(*lines):
    return [(line, None) for line in lines]


def hand_over(delivery, ring, sinks, pos, lines):
    """What the agent's loop does per drain: read up to pos, write, flush."""
    ring.read_pos = pos
    for sink in sinks:
        sink.write_events(batch(*lines))
    delivery.flushed()


def written_through(sink, n, timeout=5.0):
    with sink._cond:
        return sink._cond.wait_for(lambda: sink.written_batches >= n, timeout)


def test_the_ring_is_released_only_after_the_exporter_wrote():
    ring, inner = FakeRing(), GatedExporter()
    sink = ThreadedSink(inner)
    delivery = Delivery(ring, [sink])
    hand_over(delivery, ring, [sink], 100, ["a"])
    assert inner.entered.acquire(timeout=5)
    assert ring.commits == []                       # read, handed over, not yet written
    inner.gate.release()
    assert written_through(sink, 1)
    assert ring.commits == [100] and inner.lines == ["a"]
    sink.close()


def test_a_dropped_batch_does_not_release_an_earlier_unwritten_one():
    """The queue holds batch 2 while batch 1 is being written; batch 3 finds
    the queue full and is dropped (counted).  Counting it as done must not
    release batch 2's records before batch 2 is written."""
    ring, inner = FakeRing(), GatedExporter()
    sink = ThreadedSink(inner, max_events=1)
    delivery = Delivery(ring, [sink])
    hand_over(delivery, ring, [sink], 100, ["1"])
    assert inner.entered.acquire(timeout=5)         # batch 1 in flight
    hand_over(delivery, ring, [sink], 200, ["2"])   # queued
    hand_over(delivery, ring, [sink], 300, ["3"])   # queue full: dropped
    assert inner.stats.dropped == 1
    assert ring.commits == []
    inner.gate.release()                            # batch 1 written
    assert written_through(sink, 1)
    assert ring.commits == [100]                    # not 300: batch 2 is not written
    assert inner.entered.acquire(timeout=5)
    inner.gate.release()                            # batch 2 written; 3 was dropped after it
    assert written_through(sink, 3)
    assert ring.commits[-1] == 300 and inner.lines == ["1", "2"]
    sink.close()


def test_a_batch_dropped_during_a_write_waits_for_that_write():
    ring, inner = FakeRing(), GatedExporter()
    sink = ThreadedSink(inner, max_events=1)
    delivery = Delivery(ring, [sink])
    hand_over(delivery, ring, [sink], 100, ["1"])
    assert inner.entered.acquire(timeout=5)
    sink.max_events = 0                             # the next batch is dropped, nothing queued
    hand_over(delivery, ring, [sink], 200, ["2"])
    assert ring.commits == []
    inner.gate.release()
    assert written_through(sink, 2)
    assert ring.commits == [200]
    sink.close()


def test_every_exporter_behind_a_pipeline_must_have_written():
    ring, slow, fast = FakeRing(), GatedExporter("slow"), GatedExporter("fast")
    sinks = [ThreadedSink(slow), ThreadedSink(fast)]
    pipeline = ExportPipeline(sinks)
    delivery = Delivery(ring, [pipeline])
    assert delivery.exporters == sinks
    hand_over(delivery, ring, [pipeline], 64, ["x"])
    fast.gate.release()
    assert written_through(sinks[1], 1)
    assert ring.commits == []                       # the slow one has not written
    slow.gate.release()
    assert written_through(sinks[0], 1)
    assert ring.commits == [64]
    for s in sinks:
        s.close()


def test_records_no_exporter_is_given_are_released_at_once():
    """Records that make no event (a fork) still go: nothing to wait for."""
    ring, inner = FakeRing(), GatedExporter()
    sink = ThreadedSink(inner)
    delivery = Delivery(ring, [sink])
    ring.read_pos = 48
    delivery.flushed()
    assert ring.commits == [48]
    sink.close()


def test_a_stalled_exporter_holds_the_ring_at_most_max_hold():
    now = [0.0]
    ring, inner = FakeRing(), GatedExporter()
    sink = ThreadedSink(inner)
    delivery = Delivery(ring, [sink], max_hold=2.0, clock=lambda: now[0])
    hand_over(delivery, ring, [sink], 100, ["a"])
    now[0] = 1.0
    delivery.release_stale()
    assert ring.commits == [] and delivery.forced == 0
    now[0] = 2.5
    delivery.release_stale()
    assert ring.commits == [100] and delivery.forced == 1
    inner.gate.release()
    sink.close()


def test_a_stalled_exporter_holds_at_most_max_bytes():
    ring, inner = FakeRing(), GatedExporter()
    sink = ThreadedSink(inner)
    delivery = Delivery(ring, [sink], max_hold=60.0, max_bytes=150)
    hand_over(delivery, ring, [sink], 100, ["a"])
    hand_over(delivery, ring, [sink], 200, ["b"])
    delivery.release_stale()
    assert ring.commits == [100]                    # 200 held, then 100 after the release
    inner.gate.release()
    inner.gate.release()
    sink.close()


class Positioned(tuple):
    """A (line, meta) pair with the ring position of its record (Event.pos)."""
    pos = 0


def positioned(line, pos):
    item = Positioned((line, None))
    item.pos = pos
    return item


class MarkingRing(FakeRing):
    def __init__(self, released=0, newest=0):
        super().__init__()
        self.released_pos, self.producer_pos = released, newest


def test_the_next_agent_does_not_write_again_what_an_exporter_wrote():
    """Agent 1's exporter marks how far its writes reach; killed before the
    ring was released, agent 2 re-reads from the release point and its
    exporter of the same name skips up to the mark, another exporter not."""
    import mmap
    import os
    from tetrahost.export.delivery import DeliveryMarks

    fd = os.memfd_create("delivered")
    os.ftruncate(fd, mmap.PAGESIZE)
    try:
        file1 = GatedExporter("file:/var/log/tetragon/tetragon.log")
        sink1 = ThreadedSink(file1)
        Delivery(MarkingRing(), [sink1], marks=DeliveryMarks(fd))
        sink1.write_events([positioned("a", 100), positioned("b", 200)])
        file1.gate.release()
        assert written_through(sink1, 1)
        sink1.close()                               # "killed": nothing released (no commit to see here)

        file2, stdout2 = GatedExporter("file:/var/log/tetragon/tetragon.log"), GatedExporter("stdout")
        sinks = [ThreadedSink(file2), ThreadedSink(stdout2)]
        Delivery(MarkingRing(released=50, newest=300), sinks, marks=DeliveryMarks(fd))
        assert sinks[0].skip_until == 200 and sinks[1].skip_until == 0
        again = [positioned("a", 100), positioned("b", 200), positioned("c", 300)]
        for s, e in zip(sinks, (file2, stdout2)):
            s.write_events(again)
            e.gate.release()
            assert written_through(s, 1)
            s.close()
        assert file2.lines == ["c"] and sinks[0].skipped == 2 and sinks[0].skip_until == 0
        assert stdout2.lines == ["a", "b", "c"]
    finally:
        os.close(fd)


def test_a_replaced_generations_events_are_skipped_by_that_generations_marks_and_never_marked():
    """An upgrade reads the old ring once (its events carry minus their position
    there): what the old agent's exporter of the same name wrote is skipped, and
    those positions never become this ring's mark."""
    import mmap
    import os
    from tetrahost.export.delivery import DeliveryMarks

    old_fd, new_fd = os.memfd_create("old"), os.memfd_create("new")
    for fd in (old_fd, new_fd):
        os.ftruncate(fd, mmap.PAGESIZE)
    try:
        old = DeliveryMarks(old_fd)
        slot, _ = old.slot("stdout")
        slot.pos = 5000                              # the old agent's stdout wrote up to 5000 there
        out = GatedExporter("stdout")
        sink = ThreadedSink(out)
        new_marks = DeliveryMarks(new_fd)
        delivery = Delivery(MarkingRing(), [sink], marks=new_marks)
        delivery.skip_replaced(old, released=1000)
        sink.write_events([positioned("old-written", -4000), positioned("old-not-written", -6000),
                           positioned("new", 64)])
        delivery.end_replaced()
        sink.write_events([positioned("old-late", -4500)])   # after the drain: nothing is skipped any more
        out.gate.release()
        out.gate.release()
        assert written_through(sink, 2)
        assert out.lines == ["old-not-written", "new", "old-late"]
        assert new_marks.written("stdout") == 64     # never an old ring's position
        sink.close()
    finally:
        os.close(old_fd)
        os.close(new_fd)


def test_a_full_queue_pauses_reading_and_a_write_wakes_the_reader():
    """Back-pressure: while the exporter has no room for another batch the loop
    leaves the records in the ring; the write that makes room wakes it."""
    now = [0.0]
    ring, inner = FakeRing(), GatedExporter()
    sink = ThreadedSink(inner, max_events=2)
    delivery = Delivery(ring, [sink], max_hold=2.0, clock=lambda: now[0])
    woken = threading.Event()
    delivery.on_room = woken.set
    assert not delivery.backlogged(1)
    hand_over(delivery, ring, [sink], 100, ["a"])         # in flight (the gate holds the write)
    assert inner.entered.acquire(timeout=5)
    hand_over(delivery, ring, [sink], 200, ["b", "c"])    # queued: the queue is full now
    assert delivery.backlogged(1) and delivery.paused == 1
    assert not woken.is_set()
    inner.gate.release()
    inner.gate.release()
    assert woken.wait(5)                                  # the write made room
    assert written_through(sink, 2)
    assert not delivery.backlogged(1)
    assert inner.lines == ["a", "b", "c"] and sink.stats.dropped == 0
    sink.close()


def full_exporter():
    """(clock, ring, exporter, its sink, delivery): one write in flight behind a
    closed gate and a queue of one event that is full."""
    now = [0.0]
    ring, stuck = FakeRing(), GatedExporter("stuck")
    sink = ThreadedSink(stuck, max_events=1)
    delivery = Delivery(ring, [sink], max_hold=2.0, clock=lambda: now[0])
    hand_over(delivery, ring, [sink], 100, ["a"])
    assert stuck.entered.acquire(timeout=5)
    hand_over(delivery, ring, [sink], 200, ["b"])
    return now, ring, stuck, sink, delivery


def test_a_stalled_exporter_pauses_reading_at_most_max_hold():
    """Full for longer than max_hold: stalled, not slow; reading goes on and
    that exporter drops what does not fit (counted), the others get it all."""
    now, ring, stuck, sink, delivery = full_exporter()
    assert delivery.backlogged(1)
    now[0] = 1.5
    assert delivery.backlogged(1)
    now[0] = 2.5
    assert not delivery.backlogged(1)                     # 2.5 s full: read on
    hand_over(delivery, ring, [sink], 300, ["c"])
    assert sink.stats.dropped == 1                        # counted where it belongs
    stuck.gate.release()
    stuck.gate.release()
    sink.close()


def test_one_write_joins_a_bounded_number_of_events():
    """The worker takes queued batches in turns of at most WRITE_EVENTS events
    (the joined lines are a transient copy), in order, every batch accounted."""
    from tetrahost.export import sinks as sinks_mod
    ring, inner = FakeRing(), GatedExporter()
    sink = ThreadedSink(inner, max_events=10 * sinks_mod.WRITE_EVENTS)
    delivery = Delivery(ring, [sink])
    hand_over(delivery, ring, [sink], 10, ["first"])
    assert inner.entered.acquire(timeout=5)               # in flight; the rest queues behind it
    half = sinks_mod.WRITE_EVENTS // 2
    for i in range(5):
        hand_over(delivery, ring, [sink], 100 * (i + 1), [f"{i}-{j}" for j in range(half)])
    sizes = []
    real_write = inner.write_events

    def counted(batch):
        sizes.append(len(batch))
        real_write(batch)
    inner.write_events = counted
    for _ in range(4):
        inner.gate.release()
    assert written_through(sink, 6)
    assert sizes == [2 * half, 2 * half, half] and ring.commits[-1] == 500
    assert inner.lines == ["first"] + [f"{i}-{j}" for i in range(5) for j in range(half)]
    sink.close()


def test_a_start_up_wait_for_room_passes_a_stalled_exporter_and_counts_no_pause(monkeypatch):
    """wait_for_room (an upgrade's backlog, read before the loop runs) blocks
    while an exporter is full, at most max_hold; it is not a loop turn left
    unread, so tetrahost_ringbuf_paused_total does not count it."""
    now, ring, stuck, sink, delivery = full_exporter()
    polls = []

    def sleep(_):
        polls.append(now[0])
        now[0] += 0.5
    import tetrahost.export.delivery as delivery_mod
    monkeypatch.setattr(delivery_mod.time, "sleep", sleep)      # the clock advances per poll
    delivery.wait_for_room(1)
    assert polls == [0.0, 0.5, 1.0, 1.5, 2.0] and delivery.paused == 0
    stuck.gate.release()
    stuck.gate.release()
    sink.close()


def test_a_slow_exporter_does_not_hold_the_ring_for_the_others():
    """One exporter full (journald, slower than a flood): reading pauses while
    the unread records are under half of max_bytes (a quarter of the ring);
    past that it reads on, the full exporter drops the batch (counted) and
    the other gets every event, instead of the kernel dropping for both."""
    now = [0.0]
    ring, slow, fast = FakeRing(), GatedExporter("slow"), GatedExporter("fast")
    slow_sink, fast_sink = ThreadedSink(slow, max_events=1), ThreadedSink(fast)
    sinks = [slow_sink, fast_sink]
    delivery = Delivery(ring, sinks, max_hold=60.0, max_bytes=1000, clock=lambda: now[0])
    fast.gate.release(100)                                # the fast exporter writes at once
    hand_over(delivery, ring, sinks, 100, ["a"])          # the slow one's write is in flight
    assert slow.entered.acquire(timeout=5)
    hand_over(delivery, ring, sinks, 200, ["b"])          # its queue is full now
    ring.producer_pos = 200 + 500                         # unread: exactly half of max_bytes
    assert delivery.backlogged(1) and delivery.paused == 1 and delivery.overruns == 0
    ring.producer_pos = 200 + 501                         # a little more: the ring is filling
    assert not delivery.backlogged(1) and delivery.overruns == 1 and delivery.paused == 1
    hand_over(delivery, ring, sinks, 300, ["c"])          # read on: the slow exporter drops "c"
    assert slow_sink.stats.lost_by_reason == {"queue_full": 1}
    assert written_through(fast_sink, 3)
    assert fast.lines == ["a", "b", "c"] and fast_sink.stats.dropped == 0
    slow.gate.release(3)
    for sink in sinks:
        sink.close()
    assert slow.lines == ["a", "b"]


def test_without_max_bytes_the_ring_is_never_judged_filling():
    now, ring, stuck, sink, delivery = full_exporter()
    ring.producer_pos = 10 ** 9
    assert delivery.backlogged(1) and delivery.overruns == 0
    stuck.gate.release(2)
    sink.close()
