"""systemd readiness, status and watchdog (sd_notify) for `Type=notify` units.

  READY=1      once, from start(): the agent starts components after the process
               sensor is attached and every policy given at start is loaded, and
               this component is the last one, so "active" in systemctl means
               "observing and enforcing".  (A policy that failed to load does not
               hold READY back forever; STATUS names it.)
  STATUS=...   a one-line summary (events, policies, losses), every status_interval s.
  WATCHDOG=1   from the event loop itself (a loop timer), every WATCHDOG_USEC/2:
               if the loop hangs, the pings stop and systemd restarts the service.
  STOPPING=1   when the agent shuts down.

Messages go through sdnotify's SystemdNotifier, whose socket is switched to
non-blocking: a busy PID 1 must not stall the event loop (a lost STATUS is
harmless; a lost WATCHDOG is retried half a period later).
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None                 # meant for another process (e.g. a wrapper script)
    return int(usec) / 2 / 1e6


def summary(snap) -> str:
    """One line for STATUS= from an AgentSnapshot: events by type, policy states, losses."""
    events = snap.events
    total = sum(events.values())
    parts = [f"{total} events"]
    detail = ", ".join(f"{k.removeprefix('process_')} {v}" for k, v in sorted(events.items()) if v)
    if detail:
        parts[0] += f" ({detail})"
    if snap.policies:
        states: dict[str, int] = {}
        for p in snap.policies:
            states[p.state] = states.get(p.state, 0) + 1
        parts.append(f"{len(snap.policies)} policies (" +
                     ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ")")
    else:
        parts.append("0 policies")
    lost = sum(snap.lost.values())
    parts.append(f"{lost} lost")
    return "; ".join(parts)


class Notifier:
    """Component; does nothing when NOTIFY_SOCKET is not set (not started by systemd)."""

    def __init__(self, status_interval: float = 10.0):
        self.status_interval = status_interval
        self._notifier = None
        self.status = None              # the agent's StatusBoard

    @property
    def active(self) -> bool:
        return self._notifier is not None

    def send(self, state: str) -> None:
        if self._notifier is not None:
            # sdnotify encodes latin-1 and swallows errors; keep the text ASCII.
            self._notifier.notify(state.encode("ascii", "replace").decode("ascii"))

    def start(self, services) -> None:
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        from sdnotify import SystemdNotifier
        n = SystemdNotifier()
        if n.socket is None:
            log.warning("systemd notify: cannot connect to NOTIFY_SOCKET=%s", os.environ["NOTIFY_SOCKET"])
            return
        n.socket.setblocking(False)
        self._notifier = n
        self.status = services.status
        self.send(f"READY=1\nSTATUS={summary(self.status.now())}")
        services.loop.add_timer(self.status_interval, self._status)
        interval = watchdog_interval()
        if interval is not None:
            self.send("WATCHDOG=1")
            services.loop.add_timer(interval, self._watchdog)
            log.info("systemd watchdog: pinging every %.1fs", interval)

    def _status(self) -> None:
        self.send(f"STATUS={summary(self.status.now())}")

    def _watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stop(self) -> None:
        if self._notifier is not None:
            self.send("STOPPING=1\nSTATUS=stopping")
            self._notifier.socket.close()
            self._notifier = None
