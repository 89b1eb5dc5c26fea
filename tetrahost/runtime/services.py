"""What the agent hands each component at start(services): named services, not itself.

A component (control socket, policy directory, metrics, sd_notify, export
pipeline, binary watch) registers fds and timers with the loop, adds itself
as an exporter, or reports a status section, through these; it never writes
attributes onto the agent nor reads its internals.  Nothing here is created
by a component: the agent builds it once its sensors and policies are in
place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from tetrahost.config import Config
    from tetrahost.runtime.loop import EventLoop
    from tetrahost.runtime.manager import PolicyManager
    from tetrahost.runtime.snapshot import StatusBoard


class Exporters:
    """The agent's sinks: every batch of Events goes to each, in order."""

    def __init__(self, sinks: list):
        self._sinks = sinks              # the agent's own list, which it iterates per batch

    def add(self, sink) -> None:
        """sink: write_events(list[Event]) on the loop's thread, close(); an
        exporter wrapped in ThreadedSink names in `wants` the Event forms it
        reads on its own thread (made as the batch is queued)."""
        self._sinks.append(sink)

    def remove(self, sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)


@dataclass(frozen=True)
class Services:
    loop: "EventLoop"
    status: "StatusBoard"
    exporters: Exporters
    node_name: str
    config: "Config | None"                 # None: the defaults (an agent built without a file)
    policies: "PolicyManager | None"        # None: this agent manages no policies
    # Reads the ring buffer now: for long start-up work that runs before the loop does
    drain_events: Callable[[], None]
