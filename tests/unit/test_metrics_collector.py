"""The Prometheus collector on its own: families from a status snapshot, bounded labels.

No kernel needed: the snapshot is taken from fake agent state as the loop takes it
(fake_snapshot.py).  tests/kernel/test_metrics.py scrapes a real agent.
"""
from __future__ import annotations

import dataclasses
import threading
from types import SimpleNamespace

from fake_snapshot import board, snapshot

from tetrahost.daemon import Counters
from tetrahost.events.meta import EventMeta
from tetrahost.export.sinks import SinkStats
from tetrahost.metrics import MAX_POLICY_SERIES, AgentCollector, PolicyEventCounter, tetragon_compat_metrics
from tetrahost.runtime.loop import EventLoop
from tetrahost.runtime.snapshot import StatusBoard


def test_collector_bounds_labels_and_reads_the_snapshot():
    counters = Counters(records=10, events={"process_exec": 3, "process_kprobe": 2}, lost={"exec": 4})
    known = {f"p{i}" for i in range(2000)}
    pc = PolicyEventCounter(lambda: known)
    batch = [("{}", EventMeta(kind="process_kprobe", pid=1, binary="", exec_id="", ktime=0,
                              policy=f"p{i}", hook="h", action="SIGKILL")) for i in range(1500)]
    batch.append(("{}", EventMeta(kind="process_kprobe", pid=1, binary="", exec_id="", ktime=0,
                                  policy="unloaded", hook="h", action="POST")))
    pc.write_events(batch)
    assert len(pc.counts) == MAX_POLICY_SERIES + 2          # + ("other", "other", SIGKILL / POST)
    assert pc.counts[("other", "other", "SIGKILL")] == 500
    status = board(counters=counters, cache=[1, 2], sections={"policy_events": lambda: dict(pc.counts)})
    fams = {f.name: f for f in AgentCollector(status).collect()}
    assert {s.labels["type"]: s.value for s in fams["tetragon_events"].samples} == \
        {"PROCESS_EXEC": 3, "PROCESS_KPROBE": 2}
    assert {s.labels["type"]: s.value for s in fams["tetragon_missed_events"].samples} == \
        {"PROCESS_EXEC": 4, "PROCESS_CLONE": 0, "PROCESS_EXIT": 0}
    assert fams["tetrahost_process_cache_size"].samples[0].value == 2
    policy_series = [s for s in fams["tetragon_policy_events"].samples if s.name.endswith("_total")]
    assert len(policy_series) == MAX_POLICY_SERIES + 2


def test_export_losses_by_reason_are_served():
    stats = SinkStats()
    stats.lose(7, "ENOSPC")
    stats.lose(2, "file_removed")
    exporter = SimpleNamespace(name="file", stats=stats)
    fams = {f.name: f for f in AgentCollector(board(), exporters=[exporter]).collect()}
    assert {(s.labels["exporter"], s.labels["reason"]): s.value
            for s in fams["tetrahost_export_lost"].samples if s.name.endswith("_total")} == \
        {("file", "ENOSPC"): 7, ("file", "file_removed"): 2}
    assert [s.value for s in fams["tetrahost_export_dropped"].samples if s.name.endswith("_total")] == [9]


def test_tetragon_compat_families_from_agent_facts():
    states = ["enforcing", "monitoring", "partial", "error"]
    pm = SimpleNamespace(policies={}, errors={"/x.yaml": ["bad"]}, hooks={}, reloads=None, describe=lambda: [])
    snap = dataclasses.replace(snapshot(counters=Counters(lost={"exec": 4, "hook_busy": 2, "socktrack": 1}),
                                        policies=pm),
                               policies=tuple(SimpleNamespace(name=s, state=s) for s in states))
    fams = {f.name: f for f in tetragon_compat_metrics(snap)}
    assert {(s.labels["msg_op"], s.labels["error"]): s.value for s in fams["tetragon_bpf_missed_events"].samples} \
        == {("5", "ENOSPC"): 4, ("13", "EBUSY"): 2, ("13", "E2BIG"): 1}
    assert {s.labels["state"]: s.value for s in fams["tetragon_tracingpolicy_loaded"].samples} == \
        {"enabled": 3, "disabled": 0, "load_error": 1, "error": 1, "loading": 0, "unloading": 0}
    assert [s.value for s in fams["tetragon_build_info"].samples] == [1]


def test_a_scrape_gets_a_snapshot_the_loop_took_after_it_asked():
    """The metrics thread never reads the agent's state: it wakes the loop,
    which takes the snapshot on its own thread at the end of the turn."""
    from fake_snapshot import inputs
    counters = Counters(records=1)
    loop = EventLoop()
    status = StatusBoard(inputs(counters=counters), wake=loop.wake)
    taken_on = []
    real_take = status.inputs.in_use
    status.inputs.in_use = lambda: (taken_on.append(threading.current_thread().name), real_take())[1]

    def turn():
        counters.records += 1            # the loop changes its state between snapshots
        status.end_turn()
        return False

    loop.add_timer(60, lambda: None)     # without a wake the loop would sleep a minute
    runner = threading.Thread(target=loop.run, args=(turn,), name="loop")
    runner.start()
    try:
        got = {}
        scraper = threading.Thread(target=lambda: got.update(snap=status.fresh(timeout=10)), name="scrape")
        scraper.start()
        scraper.join(15)
        assert got["snap"] is not None and got["snap"].records >= 2
        assert taken_on and set(taken_on) == {"loop"}
    finally:
        loop.stop()
        loop.wake()
        runner.join(5)
        loop.close()
