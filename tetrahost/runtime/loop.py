"""The agent's one thread: file descriptors, timers, bounded work slices, signals.

Components never reach into the agent for these: they get this loop as a
service (tetrahost/runtime/services.py) and register with it:
add_reader() for fds (control socket, inotify), add_timer() for periodic
work (loss counters, watchdog), add_worker() for long jobs (policy loads)
run one bounded slice per turn.  wake() is the one call another thread may
make (the metrics thread asking for a fresh status snapshot).

Nothing a callback raises stops the loop: every callback runs through one
guard that logs the failure and carries on (a hostile policy file must cost
an error line, never the enforcement of the others).
"""
from __future__ import annotations

import logging
import math
import os
import selectors
import time

log = logging.getLogger(__name__)


class EventLoop:
    def __init__(self):
        self._readers: dict[int, object] = {}
        self._timers: list[list] = []          # [next_due, interval, callback]
        self._workers: list = []               # callback() -> seconds until it wants the next turn, or None
        self._work_due = float("inf")          # monotonic time the next worker slice is due
        self._sel: selectors.BaseSelector | None = None
        self._stop = False
        self.longest_turn = 0.0                # seconds of the slowest turn (work between two waits)
        # Written by signal handlers (signal.set_wakeup_fd) and by wake(): a byte ends the wait.
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- registration ------------------------------------------------------------------
    def add_reader(self, fd: int, callback) -> None:
        """Call callback() in the loop whenever fd is readable."""
        self._readers[fd] = callback
        if self._sel is not None:
            self._sel.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None and self._sel is not None:
            self._sel.unregister(fd)

    def add_timer(self, interval: float, callback) -> None:
        """Call callback() in the loop every `interval` seconds."""
        self._timers.append([self._next_due(time.monotonic(), interval), interval, callback])

    @staticmethod
    def _next_due(now: float, interval: float) -> float:
        """Timers of a second or more are due on whole seconds of the monotonic
        clock, so they share their wake-ups: an idle agent's eight of them
        (loss counters, retries, housekeeping, heap, ...) woke it ~3 times a
        second at their own phases, ~0.15 ms of CPU each here."""
        if interval >= 1.0:
            return float(math.floor(now + interval))
        return now + interval

    def add_worker(self, callback) -> None:
        """Call callback() once per turn while it has work: it does one bounded
        slice and returns 0 (more now), a delay in seconds (call again then) or
        None (idle until something calls wake_workers())."""
        self._workers.append(callback)
        self.wake_workers()

    def wake_workers(self) -> None:
        """New work for the workers: run them on the next turn."""
        self._work_due = 0.0

    # -- control -----------------------------------------------------------------------
    def wake(self) -> None:
        """End the current wait (safe from any thread)."""
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:      # the pipe is full: the loop is woken already
            pass

    def stop(self, *_) -> None:
        """Leave run() after this turn (a signal handler's signature)."""
        self._stop = True

    def close(self) -> None:
        os.close(self.wake_r)
        os.close(self.wake_w)

    @staticmethod
    def guarded(callback, what=None) -> None:
        """Run one callback; whatever it raises is logged, never propagated: the
        loop serves enforcement, and one failing task must not end it."""
        try:
            callback()
        except Exception:
            log.exception("event loop: %s failed", what or callback)

    # -- running -----------------------------------------------------------------------
    def run(self, turn) -> None:
        """Turn until stop(): wait for a reader, the next timer or worker or
        the time turn() asked for, then run the ready readers, turn() (the
        agent's own work each turn: it returns the monotonic time it wants the
        next turn at, inf for none), the due timers and the workers."""
        self._sel = sel = selectors.DefaultSelector()
        sel.register(self.wake_r, selectors.EVENT_READ, self._drain_wake)
        for fd, callback in self._readers.items():
            sel.register(fd, selectors.EVENT_READ, callback)
        turn_due = 0.0
        try:
            while not self._stop:
                now = time.monotonic()
                due = min(turn_due, self._work_due, *(t[0] for t in self._timers))
                ready = sel.select(timeout=None if due == math.inf else max(0.0, due - now))
                began = time.monotonic()
                for key, _ in ready:
                    self.guarded(key.data, f"reader of fd {key.fd}")
                turn_due = turn()
                self.run_timers()
                self.run_workers()
                self.longest_turn = max(self.longest_turn, time.monotonic() - began)
        finally:
            sel.close()
            self._sel = None

    def run_timers(self) -> None:
        now = time.monotonic()
        for timer in self._timers:
            if now >= timer[0]:
                timer[0] = self._next_due(now, timer[1])
                self.guarded(timer[2], f"periodic task {timer[2]}")

    def run_workers(self) -> None:
        now = time.monotonic()
        if now < self._work_due:
            return
        due = float("inf")
        for worker in self._workers:
            delay = None
            try:
                delay = worker()
            except Exception:
                log.exception("event loop: worker %s failed", worker)
                delay = 1.0          # a failing worker is retried, slowly
            if delay is not None:
                due = min(due, now + delay)
        self._work_due = due

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
