"""The syscall dispatcher: one program per direction on raw_syscalls, for every
syscall-fallback hook (csrc/bpf/dispatch.bpf.c, csrc/bpf/lib/dispatch.bpf.h).

Hooks used to attach their own program to sys_enter, so every syscall of
every task ran every hook's filter.  Now a hook's th_sys_enter/th_sys_exit
program goes into a slot of the dispatcher's program arrays and its slot into
the chain of each syscall it covers; the dispatcher tail-calls the chain of
the syscall being made, and nothing for the others.  The dispatcher's own
programs are attached only while some hook is registered: with none, the
host pays nothing on its syscalls.

The hook objects reuse the dispatcher's maps (shared by fd, like the ring
buffer), and each hook's th_hook_config.dispatch_slot tells its program where
it stands in a chain, so it can call the next hook.

With a PinStore the maps and links are pinned (g<N>/dispatch/): the program
arrays, pinned, keep every dispatched hook program alive while no agent runs.
An adopting agent reuses the pinned maps, reads the chains back from them and
holds the pinned links; it loads the dispatcher's programs only to attach a
direction that had no link.
"""
from __future__ import annotations

import logging
import os

from tetrahost.bpf import BpfError, BpfObject, Link
from tetrahost.bpf.native import ffi, lib
from tetrahost.sensors.objects import find_object

log = logging.getLogger(__name__)

# hook programs the dispatcher runs, and on which tracepoint
DIRECTIONS = {"th_sys_enter": "enter", "th_sys_exit": "exit", "th_open_exit": "exit", "th_enforcer_exit": "exit"}
MAP_NAMES = tuple(f"sys_{d}_{kind}" for d in ("enter", "exit") for kind in ("progs", "chains", "hooked"))


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


class DispatchFull(BpfError):
    """No room in the dispatcher for one more hook (slots or a syscall's chain)."""


class _Registration:
    """What HookSensor keeps in place of a link: destroy() takes the hook out."""

    def __init__(self, dispatcher: "SyscallDispatcher", direction: str, slot: int, numbers: tuple[int, ...]):
        self._dispatcher, self.direction, self.slot, self.numbers = dispatcher, direction, slot, numbers
        self.description = f"raw_tp/sys_{direction} dispatcher slot {slot}"

    @property
    def attached(self) -> bool:
        return self._dispatcher is not None

    def destroy(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher._unregister(self)
            self._dispatcher = None


class SyscallDispatcher:
    def __init__(self, shared: dict | None = None, path=None, pins=None):
        """shared: maps to reuse by name (the process sensor's ring buffer and
        loss counters, which the dispatch object declares like every object);
        pins: a PinStore (adopt its generation's dispatcher, or pin this one)."""
        self.pins = pins
        self.obj = BpfObject(path or find_object("dispatch"))
        self._free = list(range(lib.TH_SYS_HOOK_SLOTS - 1, -1, -1))
        self._chains: dict[str, dict[int, list[int]]] = {"enter": {}, "exit": {}}
        self._links: dict[str, Link | None] = {"enter": None, "exit": None}
        adopt = pins is not None and pins.adopted
        try:
            for name, shared_map in (shared or {}).items():
                if name in ("events", "losses", "ring_ctl"):
                    self.obj.map(name).reuse_fd(shared_map)
            if adopt:
                self._reuse_pinned_maps()
            self.obj.load()
            if adopt:
                self._adopt_state()
            elif pins is not None:
                for name in MAP_NAMES:
                    self.obj.map(name).pin(pins.gen_path("dispatch", name))
        except BaseException:
            self.close()
            raise

    def _reuse_pinned_maps(self) -> None:
        from tetrahost.bpf.pinned import obj_get
        for name in MAP_NAMES:
            fd = obj_get(self.pins.gen_path("dispatch", name))
            try:
                self.obj.map(name).reuse_fd_number(fd)
            finally:
                os.close(fd)

    def _adopt_state(self) -> None:
        """The chains and links as the previous agent left them."""
        from tetrahost.bpf.pinned import open_link
        used = set()
        for direction in ("enter", "exit"):
            for key in list(self.obj.map(f"sys_{direction}_chains").keys()):
                raw = self.obj.map(f"sys_{direction}_chains").lookup(key)
                if raw is None:
                    continue
                chain = ffi.cast("struct th_sys_chain *", ffi.from_buffer(raw))
                slots = [chain.slot[i] for i in range(min(chain.n, lib.TH_SYS_CHAIN_MAX))]
                self._chains[direction][int.from_bytes(key, "little")] = slots
                used |= set(slots)
            path = self.pins.gen_path("dispatch", f"link_{direction}")
            if os.path.exists(path):
                self._links[direction] = open_link(path, f"raw_tp/sys_{direction} dispatcher")
        self._free = [s for s in self._free if s not in used]

    def adopt_registration(self, direction: str, slot: int, numbers) -> "_Registration":
        """A registration for a hook the previous agent put in the chains."""
        if slot in self._free:
            self._free.remove(slot)
        return _Registration(self, direction, slot, tuple(sorted(set(numbers))))

    def drop_unowned(self, owned: set[int]) -> list[int]:
        """Take out of the chains the slots no hook owns (a load the previous
        agent did not finish); the slots dropped."""
        stray = sorted({s for chains in self._chains.values() for c in chains.values() for s in c} - owned)
        for slot in stray:
            for direction in ("enter", "exit"):
                numbers = [nr for nr, c in self._chains[direction].items() if slot in c]
                if numbers:
                    self._unregister(_Registration(self, direction, slot, tuple(numbers)))
        return stray

    @property
    def maps(self) -> dict:
        """The maps a hook object must reuse (by name) to be dispatched."""
        return {name: self.obj.map(name) for name in MAP_NAMES}

    def reserve_slot(self) -> int:
        """A slot for one hook object (its sys_enter and sys_exit halves share it)."""
        if not self._free:
            raise DispatchFull(0, f"the syscall dispatcher holds {lib.TH_SYS_HOOK_SLOTS} hooks at most")
        return self._free.pop()

    def release_slot(self, slot: int) -> None:
        if any(slot in chain for chains in self._chains.values() for chain in chains.values()):
            return      # still registered: freed by the registration's destroy()
        if slot not in self._free:
            self._free.append(slot)

    def register(self, program, slot: int, numbers) -> _Registration:
        """Put `program` (th_sys_enter or th_sys_exit of a loaded hook object
        whose config holds dispatch_slot = slot) on the syscalls `numbers`."""
        direction = DIRECTIONS[program.name]
        numbers = tuple(sorted(set(numbers)))
        chains = self._chains[direction]
        full = [nr for nr in numbers if len(chains.get(nr, ())) >= lib.TH_SYS_CHAIN_MAX]
        if full:
            raise DispatchFull(0, f"syscall {full[0]} has {lib.TH_SYS_CHAIN_MAX} hooks already "
                                  f"(the kernel's tail-call limit bounds a chain)")
        self.obj.map(f"sys_{direction}_progs").update(_u32(slot), _u32(program.fd))
        registration = _Registration(self, direction, slot, numbers)
        try:
            for nr in numbers:
                self._write_chain(direction, nr, chains.get(nr, []) + [slot])
            self._ensure_attached(direction)
        except BaseException:
            registration.destroy()
            raise
        return registration

    def _unregister(self, reg: _Registration) -> None:
        chains = self._chains[reg.direction]
        for nr in reg.numbers:
            if reg.slot in chains.get(nr, ()):
                self._write_chain(reg.direction, nr, [s for s in chains[nr] if s != reg.slot])
        # out of every chain first: nothing calls the slot when it empties
        self.obj.map(f"sys_{reg.direction}_progs").delete(_u32(reg.slot))
        if not chains and self._links[reg.direction] is not None:
            self._unpin_link(reg.direction)
            self._links[reg.direction].destroy()
            self._links[reg.direction] = None
        self.release_slot(reg.slot)

    def _write_chain(self, direction: str, nr: int, slots: list[int]) -> None:
        """The chain of syscall nr becomes `slots`.  A hash element is replaced
        whole, so the kernel sees the old chain or the new one; the length
        (`hooked`) goes up after a chain grows and down before it empties."""
        hooked, chains_map = self.obj.map(f"sys_{direction}_hooked"), self.obj.map(f"sys_{direction}_chains")
        if slots:
            chain = ffi.new("struct th_sys_chain *")
            chain.n = len(slots)
            for i, slot in enumerate(slots):
                chain.slot[i] = slot
            chains_map.update(_u32(nr), ffi.buffer(chain)[:])
            hooked.update(_u32(nr), _u32(len(slots)))
            self._chains[direction][nr] = list(slots)
        else:
            hooked.update(_u32(nr), _u32(0))
            chains_map.delete(_u32(nr))
            self._chains[direction].pop(nr, None)

    def _ensure_attached(self, direction: str) -> None:
        if self._links[direction] is None:
            self._links[direction] = self.obj.program(f"th_dispatch_{direction}").attach()
            if self.pins is not None:
                self._links[direction].pin(self.pins.gen_path("dispatch", f"link_{direction}"))
            log.info("syscall dispatcher attached to raw_syscalls sys_%s", direction)

    def hooks_on(self, direction: str, nr: int) -> list[int]:
        """The slots chained on syscall nr (tests, status)."""
        return list(self._chains[direction].get(nr, ()))

    def _unpin_link(self, direction: str) -> None:
        if self.pins is not None:
            try:
                os.unlink(self.pins.gen_path("dispatch", f"link_{direction}"))
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Our fds closed: detached unless pinned (the pins keep it running)."""
        for direction, link in self._links.items():
            if link is not None:
                link.destroy()
                self._links[direction] = None
        self.obj.close()
