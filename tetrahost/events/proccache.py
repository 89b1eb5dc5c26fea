"""The process cache: what every event needs to name its process and parent.

Seeded from a /proc scan at start (entries flagged "procFS", as Tetragon
does), then kept current by the kernel's records:

  ExecRecord  a new process image: a new entry replaces whatever the pid had
              (the pre-exec image, a forked clone, or a stale entry after pid
              reuse) and yields an exec event carrying it and its parent.
  ForkRecord  a new process that has not exec'd yet: it inherits its parent's
              binary/args/cwd/namespaces/creds with its own pid and ktime and
              flag "clone" (Tetragon's name).  No event.  The entry is made
              when something asks for it (an event of the clone, its exit,
              its own fork): most clones exec at once, and their exec
              replaces the clone unseen.  Until then the fork is kept with
              the parent image it was forked from, which it holds.
  ExitRecord  yields an exit event carrying the process and the parent it was
              started from, then releases the entry.

exec_id, as Tetragon: base64 (standard alphabet, padded) of the ASCII text
"{node_name}:{ktime}:{pid}", ktime being the boot-time ns of the exec (of
the fork for a clone, of the start time read from stat for procFS entries).

Parent linkage.  An exec looks its parent up by ppid (the kernel's real
parent now).  An exit renders the parent recorded when the process appeared
(its parent_exec_id), which may have exited meanwhile: an entry is kept while
it is a pid's current image OR some retained entry names it as parent (a
reference count), and released when both stop.  An unknown parent never
stops an event: it goes out without "parent" and `stats.parent_missing` counts
it.

Bounded memory: at most `max_entries` entries.  Beyond that, entries kept only
for their children go first (oldest first), then the oldest live entries;
`stats.evictions` counts both.  At most MAX_PENDING_FORKS forks wait for their
entry; beyond that the oldest gets it.
"""
from __future__ import annotations

from binascii import b2a_base64
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from tetrahost.events.cgroups import Workload, workload_from_path
from tetrahost.events.procfs import ProcInfo, scan_processes
from tetrahost.events.records import Caps, Creds, ExecRecord, ExitRecord, ForkRecord

DEFAULT_MAX_ENTRIES = 65536
MAX_PENDING_FORKS = 4096
_NO_WORKLOAD = Workload()


def make_exec_id(node_name: str, ktime: int, pid: int) -> str:
    return b2a_base64(f"{node_name}:{ktime}:{pid}".encode(), newline=False).decode("ascii")


class ProcessEntry:
    """One process image.  Fields are fixed once created (exporters cache renderings).

    A new exec is always a new entry, so what is derived from an entry and
    kept on it (`rendered`, `texts`) can never describe a previous binary."""

    __slots__ = (
        "exec_id", "pid", "tid", "ppid", "ktime", "auid", "creds", "caps", "ns",
        "binary", "args", "cwd", "flags", "parent_exec_id", "cgroup_id", "cgroup",
        "workload", "live", "child_refs", "holds_parent", "rendered", "texts", "compact",
    )

    # Positional parameters (keywords work too): one is made per fork and per exec.
    def __init__(self, exec_id: str, pid: int, tid: int, ppid: int, ktime: int,
                 auid: int | None, creds: Creds, caps: Caps, ns: tuple[int, ...],
                 binary: bytes, args: list[bytes], cwd: bytes, flags: str,
                 cgroup_id: int = 0, cgroup: str = "", workload: Workload = _NO_WORKLOAD,
                 texts: tuple[str, str, str, str] | None = None):
        self.exec_id = exec_id
        self.pid = pid
        self.tid = tid
        self.ppid = ppid
        self.ktime = ktime            # boot ns: exec (execve), fork (clone), start (procFS)
        self.auid = auid              # None when the kernel could not tell
        self.creds = creds
        self.caps = caps
        self.ns = ns
        self.binary = binary
        self.args = args              # argv[1:]
        self.cwd = cwd
        self.flags = flags            # Tetragon flag words, space separated
        self.parent_exec_id: str | None = None
        self.cgroup_id = cgroup_id
        self.cgroup = cgroup
        self.workload = workload
        self.live = True              # current image of a running pid
        self.child_refs = 0           # retained entries naming this one as parent
        self.holds_parent = False     # this entry counts in its parent's child_refs
        # The JSON exporter's rendering of this entry, made on first use.  One
        # renderer (one node name, one boot offset) per cache is assumed.
        self.rendered: str | None = None
        # (binary, unit, container id, workload namespace) as exported text,
        # made on first use (tetrahost.events.meta.process_texts); a clone
        # shares its parent's: same binary bytes, same workload.
        self.texts = texts
        # (binary, arguments) as the compact one-liner shows them, made on
        # first use (TetragonJSON.compact_line).
        self.compact: tuple[str, str] | None = None

    @property
    def uid(self) -> int:
        return self.creds.uid

    def __repr__(self) -> str:
        return (f"ProcessEntry(pid={self.pid}, binary={self.binary!r}, flags={self.flags!r}, "
                f"exec_id={self.exec_id!r}, live={self.live})")


@dataclass(slots=True)
class ProcessEvent:
    """An exec or exit, ready for an exporter."""

    kind: str                          # "exec" | "exit"
    process: ProcessEntry
    parent: ProcessEntry | None
    ktime: int                         # boot ns of the event
    signal: int = 0                    # exit only: terminating signal, 0 if none
    status: int = 0                    # exit only: exit status


@dataclass(slots=True)
class CacheStats:
    procfs_loaded: int = 0
    parent_missing: int = 0            # event sent without parent
    fork_parent_missing: int = 0       # fork of an unknown parent: no entry made
    exit_unknown: int = 0              # exit of an unknown pid: no event possible
    stale_replaced: int = 0            # a fork found the pid still taken (missed exit)
    evictions: int = 0


def exec_flags(rec: ExecRecord) -> str:
    if not (rec.truncated_path or rec.path_unresolved or rec.truncated_args or rec.args_error
            or rec.truncated_cwd):      # the usual case
        return "execve rootcwd" if rec.cwd == b"/" else "execve"
    words = ["execve"]
    if rec.cwd == b"/":
        words.append("rootcwd")
    if rec.truncated_path:
        words.append("truncFilename")
    if rec.path_unresolved:
        words.append("errorPathResolution")   # deeper than the kernel-side walk: leaf end only
    if rec.truncated_args:
        words.append("truncArgs")
    if rec.args_error:
        words.append("errorArgs")
    if rec.truncated_cwd:
        words.append("truncCWD")       # tetrahost's own: Tetragon has no such flag
    return " ".join(words)


_INHERITED_FLAGS = ("truncFilename", "errorPathResolution", "truncArgs", "errorArgs", "truncCWD", "rootcwd")


@lru_cache(maxsize=256)
def clone_flags(parent_flags: str) -> str:
    """"clone" plus the parent's flags that still describe the inherited data
    (cached: a handful of distinct flag strings exist)."""
    words = ["clone"] + [w for w in parent_flags.split() if w in _INHERITED_FLAGS]
    return " ".join(words)


class ProcessCache:
    def __init__(self, node_name: str, *, max_entries: int = DEFAULT_MAX_ENTRIES,
                 cgroup_path_for: Callable[[int], str | None] | None = None):
        if max_entries < 2:
            raise ValueError("max_entries must be at least 2")
        self.node_name = node_name
        self.max_entries = max_entries
        self._cgroup_path_for = cgroup_path_for
        self._by_pid: dict[int, ProcessEntry] = {}
        # Every retained entry in insertion order (oldest first): eviction order.
        self._by_exec_id: OrderedDict[str, ProcessEntry] = OrderedDict()
        # Entries kept only because children name them: evicted before live ones.
        self._retired: OrderedDict[str, ProcessEntry] = OrderedDict()
        # Forks whose entry nobody asked for yet: pid -> (record, parent image).
        self._forks: dict[int, tuple[ForkRecord, ProcessEntry]] = {}
        self.stats = CacheStats()

    # ---- queries ---------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_exec_id) + len(self._forks)

    def running(self) -> list[ProcessEntry]:
        """The current image of every running process the cache knows."""
        for pid in list(self._forks):
            self._clone_entry(pid)
        return list(self._by_pid.values())

    def get_pid(self, pid: int) -> ProcessEntry | None:
        entry = self._by_pid.get(pid)
        if entry is None and pid in self._forks:
            entry = self._clone_entry(pid)
        return entry

    def get_exec_id(self, exec_id: str) -> ProcessEntry | None:
        return self._by_exec_id.get(exec_id)

    def parent_of(self, entry: ProcessEntry) -> ProcessEntry | None:
        if entry.parent_exec_id is None:
            return None
        return self._by_exec_id.get(entry.parent_exec_id)

    # ---- seeding ---------------------------------------------------------
    def load_procfs(self, proc_root: str = "/proc") -> int:
        return self.load_procinfos(scan_processes(proc_root))

    def load_procinfos(self, infos: Iterable[ProcInfo]) -> int:
        """Add procFS entries; parents are linked after all are in, whatever the order."""
        added = []
        for info in infos:
            flags = "procFS rootcwd" if info.cwd == b"/" else "procFS"
            entry = ProcessEntry(
                make_exec_id(self.node_name, info.start_ktime, info.pid),
                info.pid, info.pid, info.ppid, info.start_ktime,
                info.auid, info.creds, info.caps, info.ns,
                info.binary, info.args, info.cwd, flags,
                0, info.cgroup, workload_from_path(info.cgroup),
            )
            self._insert(entry, None)
            added.append(entry)
        for entry in added:
            parent = self._by_pid.get(entry.ppid) if entry.ppid else None
            if parent is not None and parent is not entry and entry.live:
                self._link(entry, parent)
        self.stats.procfs_loaded += len(added)
        return len(added)

    # ---- records ---------------------------------------------------------
    def handle(self, record: ExecRecord | ForkRecord | ExitRecord) -> ProcessEvent | None:
        """Apply one kernel record; the exec/exit event to export, or None."""
        if type(record) is ExecRecord:
            return self.handle_exec(record)
        if type(record) is ExitRecord:
            return self.handle_exit(record)
        if type(record) is ForkRecord:
            self.handle_fork(record)
            return None
        raise TypeError(f"not a process record: {type(record).__name__}")

    def handle_exec(self, rec: ExecRecord) -> ProcessEvent:
        cgroup = ""
        if rec.cgroup_id and self._cgroup_path_for is not None:
            cgroup = self._cgroup_path_for(rec.cgroup_id) or ""
        pid, ppid, ktime = rec.pid, rec.ppid, rec.ktime
        entry = ProcessEntry(
            make_exec_id(self.node_name, ktime, pid),
            pid, rec.tid, ppid, ktime, None if rec.auid_unknown else rec.auid,
            rec.creds, rec.caps, rec.ns, rec.binary, rec.args, rec.cwd, exec_flags(rec),
            rec.cgroup_id, cgroup, workload_from_path(cgroup),
        )
        parent = self._by_pid.get(ppid) if ppid else None
        if parent is None and ppid in self._forks:
            parent = self._clone_entry(ppid)
        self._insert(entry, parent)
        if parent is None and ppid:
            self.stats.parent_missing += 1
        if self._forks:
            fork = self._forks.pop(pid, None)
            if fork is not None:        # the clone this exec replaces, never asked for
                self._unhold(fork[1])
        return ProcessEvent("exec", entry, parent, ktime)

    def handle_fork(self, rec: ForkRecord) -> None:
        """Note a fork; its entry is made when asked for (get_pid, its exit)."""
        pid = rec.pid
        parent = self.get_pid(rec.ppid)         # a clone forking: its own entry now
        if parent is None:
            self.stats.fork_parent_missing += 1
            return
        old = self._by_pid.pop(pid, None)
        if old is not None:                     # its exit was missed
            self.stats.stale_replaced += 1
            self._retire(old)
        fork = self._forks.pop(pid, None)
        if fork is not None:
            self.stats.stale_replaced += 1
            self._unhold(fork[1])
        parent.child_refs += 1                  # the clone's parent image stays until it is made
        self._forks[pid] = (rec, parent)
        if len(self._forks) > MAX_PENDING_FORKS:
            self._clone_entry(next(iter(self._forks)))

    def handle_exit(self, rec: ExitRecord) -> ProcessEvent | None:
        entry = self._by_pid.get(rec.pid)
        if entry is None:
            if rec.pid not in self._forks:
                self.stats.exit_unknown += 1
                return None
            entry = self._clone_entry(rec.pid)
        parent = self.parent_of(entry)
        if parent is None and entry.ppid:
            self.stats.parent_missing += 1
        event = ProcessEvent("exit", entry, parent, rec.ktime, rec.signal, rec.status)
        # Released after the event is built: the event holds the objects it renders.
        del self._by_pid[rec.pid]
        self._retire(entry)
        return event

    # ---- bookkeeping -----------------------------------------------------
    def _clone_entry(self, pid: int) -> ProcessEntry:
        """The entry of a waiting fork: its parent's image as it was at the fork."""
        rec, parent = self._forks.pop(pid)
        ktime = rec.ktime
        entry = ProcessEntry(
            make_exec_id(self.node_name, ktime, pid),
            pid, rec.tid, rec.ppid, ktime, parent.auid, parent.creds, parent.caps, parent.ns,
            parent.binary, parent.args, parent.cwd, clone_flags(parent.flags),
            parent.cgroup_id, parent.cgroup, parent.workload, parent.texts,
        )
        entry.parent_exec_id = parent.exec_id
        # The fork's hold on the parent becomes the entry's (unless the parent was evicted meanwhile).
        entry.holds_parent = self._by_exec_id.get(parent.exec_id) is parent
        self._insert(entry, None)
        return entry

    def _unhold(self, parent: ProcessEntry) -> None:
        """A waiting fork's hold on its parent image ends without an entry."""
        if self._by_exec_id.get(parent.exec_id) is not parent:
            return                              # evicted meanwhile: nothing is held
        parent.child_refs -= 1
        if not parent.live and parent.child_refs == 0:
            self._release(parent)

    def _insert(self, entry: ProcessEntry, parent: ProcessEntry | None) -> None:
        old = self._by_pid.get(entry.pid)
        self._by_pid[entry.pid] = entry
        if old is not None:
            self._retire(old)
        if parent is not None:
            self._link(entry, parent)
        stale = self._by_exec_id.pop(entry.exec_id, None)
        if stale is not None and stale is not entry:
            # Same node/ktime/pid twice (a replayed record): the newer one wins.
            self._retired.pop(entry.exec_id, None)
        self._by_exec_id[entry.exec_id] = entry
        while len(self._by_exec_id) > self.max_entries:
            self._evict_one(keep=entry)

    def _link(self, entry: ProcessEntry, parent: ProcessEntry) -> None:
        entry.parent_exec_id = parent.exec_id
        parent.child_refs += 1
        entry.holds_parent = True

    def _retire(self, entry: ProcessEntry) -> None:
        """The entry is no pid's current image any more; release it if nothing names it."""
        entry.live = False
        if entry.child_refs > 0:
            if entry.exec_id in self._by_exec_id:
                self._retired[entry.exec_id] = entry
            return
        self._release(entry)

    def _release(self, entry: ProcessEntry) -> None:
        # Iterative: releasing a child can release its parent, and so up the chain.
        while entry is not None:
            if self._by_exec_id.get(entry.exec_id) is entry:
                del self._by_exec_id[entry.exec_id]
            self._retired.pop(entry.exec_id, None)
            parent = None
            if entry.holds_parent:
                entry.holds_parent = False
                parent = self._by_exec_id.get(entry.parent_exec_id)
                if parent is not None:
                    parent.child_refs -= 1
                    if parent.live or parent.child_refs > 0:
                        parent = None
            entry = parent

    def _evict_one(self, keep: ProcessEntry) -> None:
        if self._retired:
            _, victim = self._retired.popitem(last=False)
        else:
            victim = next(iter(self._by_exec_id.values()))
            if victim is keep:   # only possible with max_entries tiny; take the next one
                it = iter(self._by_exec_id.values())
                next(it)
                victim = next(it)
        self.stats.evictions += 1
        if self._by_pid.get(victim.pid) is victim:
            del self._by_pid[victim.pid]
        victim.live = False
        victim.child_refs = 0        # its children will render without it
        self._release(victim)
