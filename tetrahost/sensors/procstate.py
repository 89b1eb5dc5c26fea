"""Per-process state in the kernel for the selectors that need it.

matchCapabilityChanges and matchNamespaceChanges compare a process's
capabilities and namespaces with those at its last exec; matchBinaries
followChildren asks whether the process or an ancestor executed a listed
binary.  The process sensor (csrc/bpf/process.bpf.c) keeps that in its map
`proc_state` (tgid -> struct th_proc_state) at exec, fork and exit; policy
hooks read the same map (shared by fd, like the ring buffer).

The sensor keeps it only while a loaded hook needs it (map proc_feature), so
exec/fork/exit do not pay for it otherwise.  Processes that started before
it was turned on are seeded from what the agent already knows of them (its
process cache, itself loaded from /proc and kept by the exec/fork/exit
events: no /proc scan per policy load): their baseline is their state at
their exec, or when the agent started for older ones, and their
followChildren bits come from their own and their ancestors' executables
(an ancestor that already exited cannot be seen).
"""
from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable

from tetrahost.bpf.maps import BPF_ANY, BPF_NOEXIST
from tetrahost.bpf.native import ffi, lib
from tetrahost.bpf.errors import BpfError
from tetrahost.events.procfs import scan_processes

log = logging.getLogger(__name__)

PROC_TRACK, PROC_FOLLOW = 1, 2        # proc_feature bits (process.bpf.c)
_ZERO = (0).to_bytes(4, "little")


def _pid_key(pid: int) -> bytes:
    return pid.to_bytes(4, "little")


def _bin_key(path: bytes) -> bytes:
    return path[:lib.TH_STR_MAX].ljust(lib.TH_STR_MAX, b"\0")


class ProcState:
    """Owned by the daemon next to the process sensor; the policy manager
    calls acquire() before a hook that needs the state starts, release()
    when it stops."""

    def __init__(self, sensor_obj, processes: Callable[[], Iterable] | None = None, proc_root: str = "/proc"):
        """processes(): the running processes (pid, ppid, binary, caps, ns),
        e.g. ProcessCache.running; a scan of proc_root when not given."""
        self.processes = processes or (lambda: scan_processes(proc_root))
        self.state = sensor_obj.map("proc_state")
        self.feature = sensor_obj.map("proc_feature")
        self.follow_bins = sensor_obj.map("follow_bins")
        self.proc_root = proc_root
        self.users = 0
        self.bits: dict[int, tuple[bytes, ...]] = {}      # followChildren bit -> executables

    # -- users ---------------------------------------------------------------------
    def acquire(self, compiled) -> dict[int, int]:
        """Turn tracking on (first user) and give each followChildren entry of
        the hook a bit: {selector index: bit}, what the hook's config gets
        (tetrahost.sensors.hook_config) and, as its values, what release()
        takes back.  Call before the hook's config reaches the kernel."""
        follow: dict[int, int] = {}
        try:
            for sel_index, paths in compiled.follow:
                follow[sel_index] = self._alloc(paths)
        except BaseException:
            for bit in follow.values():
                self.bits.pop(bit, None)
            raise
        bits = list(follow.values())
        self.users += 1
        if self.users == 1:
            self._start()
        if bits:
            self._write_follow_bins()
            self._seed_follow(bits)
        return follow

    def release(self, bits: list[int]) -> None:
        for bit in bits:
            self.bits.pop(bit, None)
        self.users -= 1
        if self.users <= 0:
            self.users = 0
            self._stop()
            return
        if bits:
            self._write_follow_bins()
            self._clear_bits(bits)

    # -- tracking ------------------------------------------------------------------
    def _set_feature(self) -> None:
        f = (PROC_TRACK if self.users else 0) | (PROC_FOLLOW if self.users and self.bits else 0)
        self.feature.update(_ZERO, f.to_bytes(4, "little"))

    def _start(self) -> None:
        """Kernel first (every fork/exec from now on writes its entry), then
        /proc for the processes already there, without overwriting what the
        kernel wrote meanwhile (it is newer)."""
        self._clear_state()
        self._set_feature()
        st = ffi.new("struct th_proc_state *")
        seeded = 0
        for info in self.processes():
            ffi.buffer(st)[:] = bytes(ffi.sizeof(st[0]))
            st.caps.effective = info.caps.effective
            st.caps.permitted = info.caps.permitted
            st.caps.inheritable = info.caps.inheritable
            for i, inum in enumerate(info.ns[:lib.TH_NS_COUNT]):
                st.ns[i] = inum
            try:
                self.state.update(_pid_key(info.pid), ffi.buffer(st)[:], BPF_NOEXIST)
                seeded += 1
            except BpfError:
                pass            # the kernel was first (EEXIST), or the map is full
        # a process that exited while we read it left an entry the kernel's exit already passed
        for info_pid in [int.from_bytes(k, "little") for k in self.state.keys()]:
            if not os.path.exists(f"{self.proc_root}/{info_pid}"):
                self.state.delete(_pid_key(info_pid))
        log.info("per-process state for policies: on, %d running processes seeded", seeded)

    def _stop(self) -> None:
        self.bits.clear()
        self._set_feature()
        self._write_follow_bins()
        self._clear_state()
        log.info("per-process state for policies: off")

    def _clear_state(self) -> None:
        for key in list(self.state.keys()):
            self.state.delete(key)

    # -- followChildren ------------------------------------------------------------
    def _alloc(self, paths: tuple[bytes, ...]) -> int:
        for bit in range(lib.TH_FOLLOW_BITS):
            if bit not in self.bits:
                self.bits[bit] = paths
                return bit
        raise BpfError(errno.ENOSPC, f"give a bit to a matchBinaries followChildren entry: all "
                       f"{lib.TH_FOLLOW_BITS} are in use by loaded policies")

    def _write_follow_bins(self) -> None:
        """follow_bins = every executable -> OR of its entries' bits."""
        want: dict[bytes, int] = {}
        for bit, paths in self.bits.items():
            for p in paths:
                want[_bin_key(p)] = want.get(_bin_key(p), 0) | 1 << bit
        for key in list(self.follow_bins.keys()):
            if key not in want:
                self.follow_bins.delete(key)
        for key, bits in want.items():
            self.follow_bins.update(key, bits.to_bytes(8, "little"), BPF_ANY)
        self._set_feature()

    def _or_bits(self, pid: int, mask: int, clear: bool = False) -> None:
        raw = self.state.lookup(_pid_key(pid))
        if raw is None:
            return
        st = ffi.new("struct th_proc_state *")
        ffi.buffer(st)[:] = raw
        st.follow_bits = st.follow_bits & ~mask if clear else st.follow_bits | mask
        try:
            self.state.update(_pid_key(pid), ffi.buffer(st)[:], BPF_ANY)
        except BpfError:
            pass

    def _seed_follow(self, bits: list[int]) -> None:
        """Mark the running processes that executed (or descend from one that
        executed) a binary of the new entries.  The kernel marks every exec
        and fork from now on; this is for the processes already there."""
        procs = {info.pid: info for info in self.processes()}
        direct: dict[int, int] = {}
        for pid, info in procs.items():
            mask = 0
            for bit in bits:
                if any(info.binary == p for p in self.bits[bit]):
                    mask |= 1 << bit
            if mask:
                direct[pid] = mask
        for pid, info in procs.items():
            mask, seen, cur = 0, set(), pid
            while cur in procs and cur not in seen:     # self and ancestors
                seen.add(cur)
                mask |= direct.get(cur, 0)
                cur = procs[cur].ppid
            if mask:
                self._or_bits(pid, mask)

    def _clear_bits(self, bits: list[int]) -> None:
        mask = 0
        for bit in bits:
            mask |= 1 << bit
        for key in list(self.state.keys()):
            self._or_bits(int.from_bytes(key, "little"), mask, clear=True)
