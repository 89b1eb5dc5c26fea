"""Executions by binary for alerting, with a bounded number of series.

A label per binary path would give Prometheus one series per path ever run on
the host: unbounded (a build tree, a package upgrade, an attacker writing
random names).  So the agent answers the question an alert asks ("did this
host start running binaries it had not run before?") itself, and serves:

  tetrahost_new_binaries_total          executions of a binary path not seen
                                        before, once the learning period
                                        (LEARNING_SECONDS after start) is over;
                                        no labels
  tetrahost_binaries_known              distinct binary paths remembered
  tetrahost_process_exec_binary_total{binary}
                                        executions of the first MAX_BINARY_SERIES
                                        distinct binaries, the rest under
                                        binary="other": at most
                                        MAX_BINARY_SERIES + 1 series

During the learning period every binary is remembered but none is counted as
new: an agent that just started sees everything for the first time, and an
alert on that would fire at every restart.  A path is remembered by its
hash (a few dozen bytes each); at most MAX_KNOWN_BINARIES are remembered, and
once that many are known every execution of an unknown path counts as new, so
filling the table cannot hide later binaries: it raises the alert instead.

The series of the first binaries seen are stable from then on (a counter that
is always there, never replaced by a busier binary), which is what rate() and
the dashboard need; the busiest binaries overall are one PromQL topk() away.
"""
from __future__ import annotations

import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from tetrahost.events.event import metas_of

LEARNING_SECONDS = 600.0
MAX_KNOWN_BINARIES = 65536
MAX_BINARY_SERIES = 100


class BinaryExecCounter:
    """A sink (before the export filters, like PolicyEventCounter) and a collector."""

    name = "metrics-binaries"

    def __init__(self, learning_seconds: float = LEARNING_SECONDS, clock=time.monotonic,
                 max_known: int = MAX_KNOWN_BINARIES, max_series: int = MAX_BINARY_SERIES):
        self._clock = clock
        self._learn_until = clock() + learning_seconds
        self._max_known = max_known
        self._max_series = max_series
        self._known: set[int] = set()
        self.new_binaries = 0
        self.by_binary: dict[str, int] = {}

    def write_events(self, batch) -> None:
        known, by_binary = self._known, self.by_binary
        learning = None
        for meta in metas_of(batch):
            if meta.kind != "process_exec" or not meta.binary:
                continue
            binary = meta.binary
            key = binary if binary in by_binary or len(by_binary) < self._max_series else "other"
            by_binary[key] = by_binary.get(key, 0) + 1
            h = hash(binary)
            if h in known:
                continue
            if learning is None:
                learning = self._clock() < self._learn_until
            if len(known) < self._max_known:
                known.add(h)
            elif learning:
                continue
            if not learning:
                self.new_binaries += 1

    def close(self) -> None:
        pass

    def collect(self):
        yield CounterMetricFamily("tetrahost_new_binaries",
                                  "Executions of binary paths not seen before (after the learning period)",
                                  value=self.new_binaries)
        yield GaugeMetricFamily("tetrahost_binaries_known", "Distinct binary paths remembered",
                                value=len(self._known))
        m = CounterMetricFamily("tetrahost_process_exec_binary",
                                "Executions by binary: the first binaries seen, the rest as \"other\"",
                                labels=["binary"])
        for binary, n in sorted(self.by_binary.copy().items()):   # copied: the loop thread writes it
            m.add_metric([binary], n)
        yield m
