"""What exporters and filters need to know about an event without parsing its JSON.

Built once per event next to the rendered line.  journald turns these into
TETRAGON_* fields, the control socket filters streams on them, metrics count
them, the file exporter's filters use them.
"""
from __future__ import annotations

from dataclasses import dataclass

from tetrahost.events.text import bytes_to_text, os_text


# Read-only by convention (every sink shares one), not frozen: a frozen
# dataclass took 1.3 µs more per event to build, on the path of every event.
@dataclass(slots=True)
class EventMeta:
    kind: str                 # "process_exec" | "process_exit" | "process_kprobe" | "process_lsm"
    pid: int
    binary: str               # the process's binary, as exported (tetrahost.events.text)
    exec_id: str
    ktime: int                # boot ns of the event
    unit: str = ""            # systemd unit of the process's cgroup
    container: str = ""       # container id, if any
    workload_namespace: str = ""
    policy: str = ""          # hook events
    hook: str = ""            # function / LSM hook name
    action: str = ""          # "SIGKILL", "POST", "OVERRIDE", ... (hook events)
    enforced: bool = False    # the action changed what the process did

    @property
    def event_type(self) -> str:
        """Tetragon's event type name: PROCESS_EXEC, PROCESS_KPROBE, ..."""
        return self.kind.upper()


def process_texts(entry) -> tuple[str, str, str, str]:
    """(binary, unit, container id, workload namespace) of a process cache
    entry as exported text, made once per entry and kept on it (entries never
    change; a new exec is a new entry)."""
    texts = entry.texts
    if texts is None:
        w = entry.workload
        texts = entry.texts = (bytes_to_text(entry.binary), os_text(w.unit or ""),
                               os_text(w.container_id or ""), os_text(w.namespace or ""))
    return texts

