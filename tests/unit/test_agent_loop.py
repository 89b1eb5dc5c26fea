"""The agent's loop and policy manager keep going whatever a callback or a policy file does."""
import errno
import logging
import math
import os
import time

import pytest
from types import SimpleNamespace

from tetrahost.daemon import Agent, Counters
from tetrahost.events.event import Event
from tetrahost.events.meta import EventMeta
from tetrahost.logrates import LogLimiter
from tetrahost.policy.load import load_text
from tetrahost.runtime import manager as pmod
from tetrahost.runtime.loop import EventLoop
from tetrahost.runtime.manager import Limits, PolicyLoadFailed, PolicyManager
from tetrahost.runtime.snapshot import StatusBoard

HOOK = """
  - call: "security_bprm_check"
    syscall: false
    args:
    - index: 0
      type: "linux_binprm"
    selectors:
    - matchActions:
      - action: Post"""


def policy(name: str, hooks: int = 1) -> str:
    return (f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\n"
            f"spec:\n  kprobes:{HOOK * hooks}\n")


class FakeRingbuf:
    def __init__(self, on_record=None, pending=0):
        self.wake_fd, self._w = os.pipe()      # never written: never readable
        self.consumed = 0
        self.on_record = on_record
        self.pending = pending            # records "in the ring"
        self.limits = []
        self.oversized = 0                # records the reader stepped over (too big)
        self.dozed = 0
        self.refuse_doze = False

    def clear_wake(self):
        pass

    def unread(self):
        return self.pending > 0

    def doze(self):
        if self.pending or self.refuse_doze:
            return False
        self.dozed += 1
        return True

    def unread_bytes(self):
        return self.pending * 200         # about a process record each

    def consume(self, limit=0):
        self.consumed += 1
        self.limits.append(limit)
        n = min(self.pending, limit) if limit else self.pending
        for _ in range(n):
            self.on_record()
        self.pending -= n
        return n


class FakeSensor:
    def __init__(self):
        self.ringbuf = FakeRingbuf()


def bare_agent() -> Agent:
    """An Agent with its loop's state but no kernel objects."""
    agent = Agent.__new__(Agent)
    agent.sensor, agent.counters = FakeSensor(), Counters()
    agent.sinks, agent._batch = [], []
    agent._ring_behind, agent._hold_ring = False, False
    agent._drain_due = math.inf
    agent.loop = EventLoop()
    agent.status = StatusBoard(None)      # nobody asks for a snapshot here
    return agent


class BatchSink:
    def __init__(self):
        self.batches = []

    def write_events(self, batch):
        self.batches.append(len(batch))


def test_a_flood_goes_out_in_bounded_batches_and_turns():
    """A ring the kernel keeps full must neither make one batch of everything
    (it took the agent past 1 GB and was dropped whole at the exporters'
    queues) nor keep the loop in one drain."""
    from tetrahost import daemon
    agent = bare_agent()
    sink = BatchSink()
    agent.sinks = [sink]
    flood = daemon.TURN_RECORDS * 2 + 100
    meta = EventMeta(kind="process_kprobe", pid=1, binary="", exec_id="", ktime=0)
    agent.sensor.ringbuf = FakeRingbuf(lambda: agent._emit(Event(meta, json="{}")), pending=flood)
    agent.drain_events()
    assert agent._ring_behind                                   # stopped with records left
    assert sum(sink.batches) == daemon.TURN_RECORDS
    assert max(sink.batches) == daemon.BATCH_RECORDS
    agent.drain_events()
    agent.drain_events()
    assert not agent._ring_behind
    assert sum(sink.batches) == flood and max(sink.batches) <= daemon.BATCH_RECORDS
    assert set(agent.sensor.ringbuf.limits) == {daemon.BATCH_RECORDS}


def test_records_too_big_for_the_reader_are_counted_not_silent():
    agent = bare_agent()
    agent.sensor.ringbuf.oversized = 2
    agent.drain_events()
    assert agent.counters.dropped["oversized"] == 2


def test_raising_reader_timer_and_worker_do_not_stop_the_loop(caplog):
    agent = bare_agent()
    calls = {"reader": 0, "timer": 0, "worker": 0, "good": 0}
    r, w = os.pipe()
    os.write(w, b"x")                     # stays readable: the reader raises every turn

    def reader():
        calls["reader"] += 1
        raise RecursionError("hostile input")

    def timer():
        calls["timer"] += 1
        raise MemoryError()

    def worker():
        calls["worker"] += 1
        raise OverflowError("int too large")

    def good():
        calls["good"] += 1
        if calls["worker"] >= 2:          # a failed worker is called again a second later
            agent.loop.stop()

    agent.loop.add_reader(r, reader)
    agent.loop.add_timer(0.001, timer)
    agent.loop.add_worker(worker)
    agent.loop.add_timer(0.01, good)
    agent.loop.run(agent._turn)
    assert calls["good"] > 5
    assert calls["reader"] > 1 and calls["timer"] > 1 and calls["worker"] > 1
    assert "RecursionError" in caplog.text and "MemoryError" in caplog.text and "OverflowError" in caplog.text


# ---- the policy manager, minus the kernel -----------------------------------------

class FakeSensorHandle:
    skipped = ()

    def stop(self):
        pass


class FakePool:
    def would_wait(self, plan):
        return False

    def take(self, plan):
        return None

    def refill(self, key):
        pass

    def key(self, plan):
        return ()

    def close(self):
        pass


@pytest.fixture
def manager(monkeypatch):
    """A PolicyManager whose hooks 'attach' through starts (a list of callables)."""
    starts = []

    fake_plan = type("P", (), {"method": "fake"})()

    def start_hook(compiled, candidates, shared, take_spare=None, dispatcher=None, follow_bits=None):
        if starts:
            starts.pop(0)()
        return SimpleNamespace(sensor=FakeSensorHandle(), plan=fake_plan, failed=[])

    monkeypatch.setattr(pmod, "compile_hook", lambda hook, hook_id, ns, monitor, tracepoint_fields: type("C", (), {
        "needs_proc_state": False})())
    monkeypatch.setattr(pmod, "plan_compiled", lambda hook, compiled, features: fake_plan)
    monkeypatch.setattr(pmod, "candidates_compiled", lambda hook, compiled, features: [fake_plan])
    monkeypatch.setattr(pmod, "start_hook", start_hook)
    m = PolicyManager(features=None, host_ns=None, shared_maps={}, limits=Limits(3, 5))
    m.pool = FakePool()
    m.starts = starts
    return m


def test_a_parser_that_raises_anything_is_an_error_naming_the_file(manager, monkeypatch):
    def explode(text, file):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(pmod, "load_text", explode)
    with pytest.raises(PolicyLoadFailed) as info:
        manager.apply_file("/p/deep.yaml", "[[[")
    assert "/p/deep.yaml" in info.value.messages[0] and "RecursionError" in info.value.messages[0]
    assert manager.reloads.failed == 1 and manager.policies == {}


def test_hook_limits_reject_the_file_and_keep_what_runs(manager):
    manager.apply_file("/p/a.yaml", policy("a", 3))
    with pytest.raises(PolicyLoadFailed, match=r"4 hooks: more than limits.max_hooks_per_policy \(3\)"):
        manager.apply_file("/p/big.yaml", policy("big", 4))
    with pytest.raises(PolicyLoadFailed, match=r"would make 6 in all: more than limits.max_hooks_total \(5"):
        manager.apply_file("/p/b.yaml", policy("b", 3))
    manager.apply_file("/p/c.yaml", policy("c", 2))          # exactly the total
    assert sorted(manager.policies) == ["a", "c"]
    assert all(h.active for s in manager.policies.values() for h in s.hooks)
    manager.apply_file("/p/a.yaml", policy("a", 3))          # a replace counts the file once
    assert manager.policies["a"].generation == 2


def test_steps_are_one_hook_each_and_commit_at_the_end(manager):
    job = manager.begin_apply("/p/a.yaml", policy("a", 3))
    steps = 0
    while not job.step():
        steps += 1
        assert "a" not in manager.policies      # not committed before every hook is attached
    assert steps == 4                            # the parse, then one per hook
    assert [s.policy.name for s in job.states] == ["a"] and "a" in manager.policies


def test_out_of_fds_is_retried_with_backoff(manager, monkeypatch):
    def emfile():
        raise OSError(errno.EMFILE, "Too many open files")

    manager.starts.extend([emfile, emfile])
    (state,) = manager.apply_file("/p/a.yaml", policy("a"))
    hs = state.hooks[0]
    assert not hs.active and "retry 1 in 1 s" in hs.error and hs.retry_at is not None
    manager.retry_failed()                       # not due yet
    assert hs.retries == 1
    hs.retry_at = 0
    manager.retry_failed()                       # fails again: the wait doubles
    assert not hs.active and "retry 2 in 2 s" in hs.error
    hs.retry_at = 0
    manager.retry_failed()
    assert hs.active and hs.error == "" and hs.retry_at is None
    assert manager.describe()[0]["state"] == "enforcing"     # no mode: enforcing


def test_a_replace_short_of_fds_keeps_the_old_version(manager):
    manager.apply_file("/p/a.yaml", policy("a"))
    manager.starts.append(lambda: (_ for _ in ()).throw(OSError(errno.ENFILE, "file table overflow")))
    with pytest.raises(PolicyLoadFailed) as info:
        manager.apply_file("/p/a.yaml", policy("a", 2))
    assert info.value.retryable and manager.policies["a"].generation == 1


# ---- the log limiter --------------------------------------------------------------

class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def test_identical_lines_are_suppressed_counted_and_reported(caplog):
    clock = Clock()
    limiter = LogLimiter(window=10, repeat_burst=2, rate=1000, burst=1000, clock=clock)
    logger = logging.getLogger("tetrahost.test.flood")
    caplog.handler.addFilter(limiter)
    try:
        for _ in range(50):
            logger.error("accept failed: %s", "EMFILE")
        logger.error("another line")
        assert caplog.text.count("accept failed: EMFILE") == 2 and "another line" in caplog.text
        clock.now = 11
        limiter.flush()
        assert "last message repeated 48 more times in 10 s: accept failed: EMFILE" in caplog.text
    finally:
        caplog.handler.removeFilter(limiter)


def test_distinct_lines_are_held_to_the_rate():
    clock = Clock()
    limiter = LogLimiter(window=10, repeat_burst=2, rate=10, burst=20, clock=clock)
    passed = sum(limiter.filter(logging.LogRecord("x", logging.ERROR, "f", 1, f"file {i} bad", None, None))
                 for i in range(100))
    assert passed == 20 and limiter.suppressed_by_rate == 80
    clock.now = 1.0            # ten more tokens
    passed = sum(limiter.filter(logging.LogRecord("x", logging.ERROR, "f", 1, f"late {i}", None, None))
                 for i in range(100))
    assert passed == 10


def test_policy_rejection_names_hostile_text_is_cut():
    limiter = LogLimiter()
    rec = logging.LogRecord("x", logging.ERROR, "f", 1, "%s", ("y" * 100000,), None)
    assert limiter.filter(rec) and len(rec.getMessage()) < 9000 and "more characters" in rec.getMessage()


def test_load_text_still_parses_the_helper_policy():
    assert load_text(policy("a", 2)).ok


def test_pinned_loss_counters_are_reported_once_across_agents():
    """The in-kernel loss counters are cumulative and outlive the agent: an
    adopting agent reports what is beyond what its predecessors reported
    (including what was lost while no agent ran), never those again."""
    agent = bare_agent()
    totals = {"exec": 7, "hook": 0}
    agent.sensor.losses = lambda: dict(totals)
    agent.pins = SimpleNamespace(losses_reported={"exec": 5})     # from the manifest
    agent.sinks = [SimpleNamespace(name="journald", stats=SimpleNamespace(lost_by_reason={"journald_busy": 3}))]
    agent._check_losses()
    assert agent.counters.lost == {"exec": 2}
    agent._check_losses()                                        # nothing new
    assert agent.counters.lost == {"exec": 2}
    totals.update(exec=9, hook=1)
    agent._check_losses()
    assert agent.counters.lost == {"exec": 4, "hook": 1}
    assert agent.pins.losses_reported == {"exec": 9, "hook": 1}  # what the next agent starts from
    agent._drain_replaced(None, True, {"exec": 3})               # a replaced generation's unreported losses
    assert agent.counters.lost == {"exec": 7, "hook": 1}
    assert agent.loss_summary() == "lost: 11 (kernel exec 7, kernel hook 1, journald journald_busy 3)"


def test_without_pins_loss_counters_are_counted_once():
    agent = bare_agent()
    agent.pins, agent._losses_seen = None, {}
    agent.sensor.losses = lambda: {"exec": 2}
    agent._check_losses()
    agent._check_losses()
    assert agent.counters.lost == {"exec": 2}
    assert bare_agent().loss_summary() == "lost: none"


def test_a_full_exporter_leaves_the_records_in_the_ring():
    """Back-pressure (export/delivery.py): no read while an exporter has no room."""
    from tetrahost import daemon
    agent = bare_agent()
    agent.sinks = [BatchSink()]
    meta = EventMeta(kind="process_kprobe", pid=1, binary="", exec_id="", ktime=0)
    agent.sensor.ringbuf = FakeRingbuf(lambda: agent._emit(Event(meta, json="{}")), pending=3000)
    room = [False]
    agent.delivery = SimpleNamespace(release_stale=lambda: None, flushed=lambda: None,
                                     backlogged=lambda n: not room[0])
    agent.drain_events()
    assert agent.sensor.ringbuf.consumed == 0 and not agent._ring_behind
    room[0] = True
    agent.drain_events()
    assert agent.sensor.ringbuf.pending == 0 and sum(agent.sinks[0].batches) == 3000
    assert max(agent.sinks[0].batches) <= daemon.BATCH_RECORDS


# -- when the ring is read: polled while records come, woken after a quiet read -----------
def agent_with_records(n: int) -> Agent:
    agent = bare_agent()
    meta = EventMeta(kind="process_exec", pid=1, binary="", exec_id="", ktime=0)
    agent.sensor.ringbuf = FakeRingbuf(lambda: agent._emit(Event(meta, json="{}")), pending=n)
    return agent


def due_now(agent: Agent) -> None:
    agent._drain_due = time.monotonic() - 0.001      # the loop's wait for it is over


def test_records_keep_the_loop_polling_and_a_quiet_read_puts_it_to_sleep():
    """While records come, the next read is DRAIN_INTERVAL on; a read that
    finds nothing dozes (the programs wake the ring's readers at their next
    record) and asks for no turn at all: the loop polled 10 times a second
    before, ~0.2 ms of CPU each here on an idle host."""
    from tetrahost import daemon
    agent = agent_with_records(3)
    ring = agent.sensor.ringbuf
    due_now(agent)
    due = agent._turn()
    assert ring.pending == 0 and ring.dozed == 0
    assert time.monotonic() < due <= time.monotonic() + daemon.DRAIN_INTERVAL
    assert agent._turn() == due                      # not due yet: nothing read
    due_now(agent)
    assert agent._turn() == math.inf and ring.dozed == 1


def test_doze_refused_keeps_polling():
    """doze() says no when records came meanwhile: they are read on the next poll."""
    agent = agent_with_records(0)
    agent.sensor.ringbuf.refuse_doze = True
    due_now(agent)
    assert agent._turn() < math.inf


def test_a_wake_up_lets_the_burst_gather_before_the_read():
    """Woken after a doze, the loop reads COALESCE_SECONDS later, not at once
    (which would take one record per wake-up, what execsnoop pays), and a
    second wake-up meanwhile does not put the read off."""
    from tetrahost import daemon
    agent = agent_with_records(3)
    before = time.monotonic()
    agent._on_ring_wake()
    due = agent._turn()
    assert agent.sensor.ringbuf.consumed == 0
    assert before < due <= time.monotonic() + daemon.COALESCE_SECONDS
    agent.sensor.ringbuf.pending += 5
    agent._on_ring_wake()
    assert agent._turn() == due
    due_now(agent)
    agent._turn()
    assert agent.sensor.ringbuf.consumed == 1 and agent.sensor.ringbuf.pending == 0


def test_a_full_wakeup_threshold_is_read_at_once():
    """The programs' other wake-up: TH_WAKEUP_BYTES wait (a flood).  That is
    read on this turn, not after the gathering delay."""
    from tetrahost.constants import TH_WAKEUP_BYTES
    agent = agent_with_records(TH_WAKEUP_BYTES // 200 + 1)
    agent._on_ring_wake()
    agent._turn()
    assert agent.sensor.ringbuf.pending == 0


def test_a_flood_turns_again_at_once():
    """A drain that stopped at TURN_RECORDS asks for the next turn now."""
    from tetrahost import daemon
    agent = agent_with_records(daemon.TURN_RECORDS + 10)
    due_now(agent)
    assert agent._turn() <= time.monotonic()
    agent._turn()
    assert agent.sensor.ringbuf.pending == 0


def test_room_at_a_full_exporter_reads_on_at_once():
    agent = agent_with_records(0)
    agent._drain_due = math.inf
    agent._on_room()
    assert agent._drain_due <= time.monotonic()


def test_timers_of_a_second_or_more_share_their_wake_ups():
    """Whole seconds of the monotonic clock: timers added at different moments
    (each subsystem adds its own) become due together, never later than their
    interval; short ones are left alone."""
    loop = EventLoop()
    now = time.monotonic()
    loop.add_timer(1.0, lambda: None)
    time.sleep(0.01)
    loop.add_timer(2.0, lambda: None)
    loop.add_timer(5.0, lambda: None)
    loop.add_timer(0.25, lambda: None)
    dues = [t[0] for t in loop._timers]
    for due, interval in zip(dues[:3], (1.0, 2.0, 5.0)):
        assert due == int(due) and now < due <= time.monotonic() + interval
    assert dues[3] != int(dues[3]) and dues[3] <= time.monotonic() + 0.25
    loop.close()
