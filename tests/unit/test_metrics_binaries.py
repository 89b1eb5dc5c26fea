"""Executions by binary: new binaries after the learning period, bounded series and memory."""
from __future__ import annotations

from tetrahost.events.meta import EventMeta
from tetrahost.metrics_binaries import BinaryExecCounter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def execs(*binaries, kind="process_exec"):
    return [("{}", EventMeta(kind=kind, pid=1, binary=b, exec_id="e", ktime=0)) for b in binaries]


def samples(counter):
    return {(s.name, tuple(s.labels.items())): s.value for f in counter.collect() for s in f.samples}


def test_learning_period_then_new_binaries_counted_once_per_path():
    clock = Clock()
    c = BinaryExecCounter(learning_seconds=60, clock=clock)
    c.write_events(execs("/bin/sh", "/usr/bin/true", "/bin/sh"))
    assert c.new_binaries == 0                      # everything is new at start: learning
    clock.now += 61
    c.write_events(execs("/bin/sh", "/tmp/x", "/tmp/x", "/tmp/y") + execs("/tmp/z", kind="process_exit"))
    assert c.new_binaries == 2                      # /tmp/x once, /tmp/y; exits are not executions
    s = samples(c)
    assert s[("tetrahost_new_binaries_total", ())] == 2
    assert s[("tetrahost_binaries_known", ())] == 4
    assert s[("tetrahost_process_exec_binary_total", (("binary", "/bin/sh"),))] == 3
    assert s[("tetrahost_process_exec_binary_total", (("binary", "/tmp/x"),))] == 2


def test_series_bounded_rest_as_other():
    c = BinaryExecCounter(learning_seconds=0, max_series=3)
    c.write_events(execs(*[f"/b/{i}" for i in range(10)], "/b/0"))
    s = samples(c)
    per_binary = {dict(k[1])["binary"]: v for k, v in s.items() if k[0] == "tetrahost_process_exec_binary_total"}
    assert per_binary == {"/b/0": 2, "/b/1": 1, "/b/2": 1, "other": 7}
    assert c.new_binaries == 10


def test_full_table_counts_every_unknown_exec_as_new():
    """Filling the table cannot hide later binaries: they keep counting."""
    clock = Clock()
    c = BinaryExecCounter(learning_seconds=10, clock=clock, max_known=5)
    c.write_events(execs(*[f"/b/{i}" for i in range(8)]))    # learning: 5 remembered, none new
    assert c.new_binaries == 0 and samples(c)[("tetrahost_binaries_known", ())] == 5
    clock.now += 11
    c.write_events(execs("/b/0", "/evil", "/evil", "/b/7"))
    assert c.new_binaries == 3                      # /b/0 known; /evil twice and /b/7 unknown
