"""HeapTrim: the heap is given back after a flood, never during one."""
from __future__ import annotations

import platform

import pytest

from tetrahost.events.event import Event
from tetrahost.events.meta import EventMeta
from tetrahost.runtime import heap as heap_module
from tetrahost.runtime.heap import (HEAP_QUIET_EVENTS, HEAP_TRIM_AFTER_EVENTS, HeapTrim, _malloc_trim,
                                    return_freed_memory_promptly)


class FakeTrim:
    def __init__(self):
        self.calls = []

    def __call__(self, pad):
        self.calls.append(pad)
        return 1


def interval(heap: HeapTrim, events: int, batch: int = 1024) -> bool:
    """One check interval in which the exporters were handed `events` events."""
    while events > 0:
        heap.write_events([None] * min(batch, events))
        events -= batch
    return heap.check()


def test_trims_once_the_flood_is_over_and_not_during_it():
    trim = FakeTrim()
    heap = HeapTrim(trim)
    flood = HEAP_TRIM_AFTER_EVENTS
    assert interval(heap, flood) is False           # busy interval: the pages are kept
    assert interval(heap, flood) is False
    assert trim.calls == []
    assert interval(heap, HEAP_QUIET_EVENTS - 1) is True     # quiet after the flood
    assert trim.calls == [0]                        # pad 0: everything free goes back
    assert interval(heap, 0) is False               # once per flood, not every quiet interval
    assert trim.calls == [0] and heap.trims == 1


def test_ordinary_traffic_trims_at_most_once_per_flood_worth_of_events():
    trim = FakeTrim()
    heap = HeapTrim(trim)
    rounds, light = 100, HEAP_QUIET_EVENTS - 1      # a steady few hundred events per interval
    for _ in range(rounds):
        interval(heap, light)
    assert 1 <= heap.trims <= rounds * light // HEAP_TRIM_AFTER_EVENTS
    assert len(trim.calls) == heap.trims


def test_a_steady_flood_is_left_alone():
    trim = FakeTrim()
    heap = HeapTrim(trim)
    for _ in range(20):
        assert interval(heap, HEAP_QUIET_EVENTS) is False   # at the quiet bound: still busy
    assert trim.calls == []


def test_starts_only_where_there_is_a_malloc_trim(monkeypatch):
    class Loop:
        def __init__(self):
            self.timers = []

        def add_timer(self, interval, callback):
            self.timers.append((interval, callback))

    class Exporters:
        def __init__(self):
            self.sinks = []

        def add(self, sink):
            self.sinks.append(sink)

    class Services:
        loop, exporters = Loop(), Exporters()

    heap = HeapTrim(FakeTrim())
    heap.start(Services)
    assert Services.exporters.sinks == [heap] and len(Services.loop.timers) == 1
    # no form of an event is made for it: it only counts what it is handed
    unrenderable = Event(EventMeta("process_exec", 1, "", "", 0), render_json=_no_render, render_data=_no_render)
    heap.write_events([unrenderable])
    monkeypatch.setattr(heap_module, "_malloc_trim", lambda: None)     # a C library without it
    services = type("S", (), {"loop": Loop(), "exporters": Exporters()})
    HeapTrim().start(services)
    assert services.exporters.sinks == [] and services.loop.timers == []


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim and mallopt are glibc's")
def test_glibc_has_both():
    assert _malloc_trim() is not None
    assert return_freed_memory_promptly() is True


def test_the_agent_runs_it():
    from tetrahost import config
    from tetrahost.cli.run_cmd import build_outputs
    cfg = config.parse("", "test")     # the defaults, whatever /etc holds
    cfg.export.stdout.enabled = False
    cfg.export.journald.enabled = False
    cfg.metrics.enabled = False
    cfg.export.filenames = []
    sinks, components, _ = build_outputs(cfg, "node", ())
    assert any(isinstance(c, HeapTrim) for c in components)
    for sink in sinks:
        sink.close()


def _no_render(*_):
    raise AssertionError("a form of an event was made for the heap trim")
