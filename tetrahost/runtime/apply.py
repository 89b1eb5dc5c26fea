"""One policy file being loaded, a step at a time (PolicyManager.begin_apply)."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tetrahost.runtime.state import PolicyLoadFailed, PolicyState

if TYPE_CHECKING:
    from tetrahost.runtime.manager import PolicyManager

log = logging.getLogger("tetrahost.runtime.manager")


class ApplyJob:
    """One file being loaded (PolicyManager.begin_apply): the parse, then one hook per step()."""

    def __init__(self, manager: "PolicyManager", path: str, steps):
        self.manager, self.path, self._steps = manager, path, steps
        self.done = False
        self.pause = 0.0                 # after a step: seconds before the next one is worth trying
        self.states: list[PolicyState] = []
        self.error: PolicyLoadFailed | None = None

    def step(self) -> bool:
        """Do the next piece of work; True once the job is finished (states or error set).
        Whatever goes wrong ends as error: a file cannot make this raise."""
        if self.done:
            return True
        try:
            self.pause = next(self._steps) or 0.0
            return False
        except StopIteration as stop:
            self.states = stop.value
        except PolicyLoadFailed as exc:
            self.error = exc
        except Exception as exc:     # e.g. RecursionError, MemoryError from a hostile file
            log.debug("loading %s failed", self.path, exc_info=True)
            text = " ".join(str(exc).split())[:300]
            self.error = PolicyLoadFailed(self.path, [f"{self.path}: cannot be loaded: {type(exc).__name__}"
                                                      + (f": {text}" if text else "")])
        self.done = True
        self.manager._finished(self)
        return True

    def wait(self) -> list[PolicyState]:
        """Run to the end; the states, or raise PolicyLoadFailed."""
        while not self.step():
            if self.pause:
                time.sleep(self.pause)
        if self.error is not None:
            raise self.error
        return self.states

    def cancel(self) -> None:
        """Abandon the load: hooks it attached are detached; nothing loaded before is touched."""
        if not self.done:
            self._steps.close()
            self.done = True
