"""One policy hook in the kernel: a copy of generic.bpf.o, configured and attached.

The object shares the process sensor's ring buffer and loss counters
(bpf_map__reuse_fd), so every record reaches user space through one epoll fd.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat

from tetrahost.bpf import BpfError, BpfObject, Link
from tetrahost.bpf.native import ffi
from tetrahost.policy.compiled import CompiledHook
from tetrahost.sensors.attach import AttachPlan
from tetrahost.sensors.dispatch import DIRECTIONS
from tetrahost.sensors.hook_config import IMA_PROGRAMS as _IMA_PROGRAMS
from tetrahost.sensors.hook_config import AttachInputs, pack_hook_config
from tetrahost.sensors.objects import find_object

log = logging.getLogger(__name__)

TRAMPOLINE_PROGRAMS = ("th_fentry", "th_fexit", "th_fmod_ret", "th_lsm") + _IMA_PROGRAMS
# events parked for the IMA program at once (one per thread in the hook at a time)
_IMA_PARKED_ENTRIES = 1024


def check_uprobe_binary(path: str) -> None:
    """A uprobe's binary must be a regular file: libbpf opens it to read its
    symbols, and opening a FIFO would block the agent for good."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise BpfError(exc.errno or errno.ENOENT, f"uprobe binary {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise BpfError(errno.EINVAL, f"uprobe binary {path}: not a regular file")


def file_identity(path: str) -> tuple[int, int, int] | None:
    """(st_dev, st_ino, st_mtime_ns) of the file `path` names now; None if none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def str_set_key(set_id: int, value: bytes, prefix: bool) -> bytes:
    """The bytes of a struct th_str_key as each string map expects them."""
    key = ffi.new("struct th_str_key *")
    key.prefixlen = 32 + 8 * len(value)
    key.set_id = set_id
    ffi.memmove(key.data, value, len(value))
    raw = ffi.buffer(key)[:]
    return raw if prefix else raw[4:]


def load_hook_object(programs: tuple[tuple[str, str], ...], shared: dict, path=None,
                     stack_entries: int = 0) -> BpfObject:
    """A loaded copy of generic.bpf.o with only `programs` ((name, target)
    pairs: AttachPlan.programs) in it, the attach targets of trampoline
    programs set, and the shared maps reused.  path: another build of the
    object (benchmarks compare them); stack_entries: the size of its
    stack_traces map (kernelStackTrace/userStackTrace), else one entry."""
    obj = BpfObject(path or find_object("generic"))
    try:
        wanted = dict(programs)
        for prog in obj.programs.values():
            prog.autoload = prog.name in wanted
        for program, target in programs:
            if program in TRAMPOLINE_PROGRAMS:
                obj.program(program).set_attach_target(target)
        for name, shared_map in shared.items():
            obj.map(name).reuse_fd(shared_map)
        if stack_entries:
            obj.map("stack_traces").max_entries = stack_entries
        if any(program in _IMA_PROGRAMS for program in wanted):
            obj.map("ima_parked").max_entries = _IMA_PARKED_ENTRIES
        return obj.load()
    except BaseException:
        obj.close()
        raise


class HookSensor:
    def __init__(self, compiled: CompiledHook, plan: AttachPlan, shared: dict, dispatcher=None,
                 follow_bits: dict[int, int] | None = None):
        """shared: maps to reuse by name (the process sensor's "events" and
        "losses", the syscall dispatcher's); dispatcher: the SyscallDispatcher
        that runs sys_enter/sys_exit fallback programs (None: they attach on
        their own, as benchmarks of one hook do); follow_bits: the process
        sensor's followChildren bit of each selector that has one."""
        self.compiled = compiled
        self.plan = plan
        self.follow_bits = dict(follow_bits or {})
        self.usdt_args: tuple = ()       # USDT hooks: where each argument is, from the binary's note
        self.shared = shared
        self.dispatcher = dispatcher
        self.dispatch_slot: int | None = None
        self.obj: BpfObject | None = None
        self.links: list[Link] = []
        self.skipped: list[str] = []     # list hooks: functions that would not attach, with why
        self.usdt = None                 # USDT hooks: the point in the binary (tetrahost.usdt.notes.UsdtTarget)
        # uprobe/USDT hooks: which file the probe went on, (st_dev, st_ino,
        # st_mtime_ns) of the path just before the attach (a later replacement
        # of the path is then seen as a difference, never missed)
        self.target_id: tuple[int, int, int] | None = None

    @property
    def dispatched(self) -> bool:
        return self.dispatcher is not None and self.plan.program in DIRECTIONS

    def _configure(self) -> None:
        """What the hook's file says at attach time: the uprobe binary's
        identity, the USDT point and its argument locations."""
        if self.compiled.hook.kind in ("uprobe", "usdt") and self.target_id is None:
            self.target_id = file_identity(self.compiled.hook.path)
        if self.compiled.hook.kind == "usdt" and self.usdt is None:
            from tetrahost.usdt.configure import locate
            from tetrahost.usdt.notes import UsdtError
            try:
                self.usdt, self.usdt_args = locate(self.compiled.hook)
            except UsdtError as exc:
                raise BpfError(errno.EINVAL, str(exc)) from None

    def config_bytes(self) -> bytes:
        """The hook_config map entry: the compiled config with what this
        attach adds (tetrahost.sensors.hook_config)."""
        inputs = AttachInputs.of_plan(self.plan, dispatch_slot=self.dispatch_slot or 0,
                                      usdt_args=self.usdt_args, follow_bits=self.follow_bits)
        return pack_hook_config(self.compiled, inputs)

    def config_digest(self) -> str:
        """What the kernel was given for this hook (config, string sets, programs
        and targets): an agent adopting a pinned hook compares it with its own
        compile of the same policy, so a changed compiler never keeps an old hook."""
        h = hashlib.sha256(self.config_bytes())
        h.update(repr((self.compiled.str_equal, self.compiled.str_prefix, self.compiled.str_postfix,
                       self.plan.programs, self.plan.targets, self.compiled.int_set)).encode())
        return h.hexdigest()[:32]

    @classmethod
    def adopted(cls, compiled: CompiledHook, plan: AttachPlan, shared: dict, dispatcher,
                links: list, slot: int | None, registrations=()) -> "HookSensor":
        """A hook a previous agent attached and pinned, taken over as it is:
        `links` (opened from the pins) and, for a dispatched hook, its slot and
        the dispatcher registrations, so that stop() takes it out as usual."""
        self = cls(compiled, plan, shared, dispatcher)
        self._configure()
        if slot is not None:
            self.dispatch_slot = slot
        self.links = list(registrations) + list(links)
        return self

    def start(self, obj: BpfObject | None = None) -> "HookSensor":
        """Configure and attach; `obj` is an already loaded copy of the object
        for this plan (load_hook_object, e.g. from a pool of verified spares),
        else one is loaded here."""
        plan = self.plan
        self._configure()
        try:
            if self.dispatched:
                self.dispatch_slot = self.dispatcher.reserve_slot()
            self.obj = obj if obj is not None else load_hook_object(plan.programs, self.shared)
            self._fill_maps()
            # the return half first: an entry that parks an event must find
            # its return program already there
            for program, target in reversed(plan.programs):
                if plan.targets and program == plan.program:
                    self._attach_each(program, plan.targets)
                else:
                    self.links.append(self._attach(self.obj.program(program), program, target))
        except BaseException:
            self.stop()
            raise
        return self

    def _fill_maps(self) -> None:
        for set_id, value in self.compiled.str_equal:
            self.obj.map("str_equal").update(str_set_key(set_id, value, prefix=False), b"\1")
        for set_id, value in self.compiled.str_prefix:
            self.obj.map("str_prefix").update(str_set_key(set_id, value, prefix=True), b"\1")
        for set_id, value in self.compiled.str_postfix:   # a suffix = a prefix of the reversal
            self.obj.map("str_postfix").update(str_set_key(set_id, value[::-1], prefix=True), b"\1")
        int_set = self.obj.map("int_set") if self.compiled.int_set else None
        for set_id, value in self.compiled.int_set:
            key = ffi.new("struct th_int_key *", {"set_id": set_id, "value": value})
            int_set.update(ffi.buffer(key)[:], b"\1")
        # the config goes last: until it is there the program does nothing
        self.obj.map("hook_config").update((0).to_bytes(4, "little"), self.config_bytes())

    def _attach_each(self, program: str, targets: tuple[str, ...]) -> None:
        """A list hook: one link per function.  A function that does not take
        the probe (not traceable on this build) is skipped and said, not fatal,
        unless none does."""
        prog = self.obj.program(program)
        for target in targets:
            try:
                self.links.append(self._attach(prog, program, target))
            except BpfError as exc:
                self.skipped.append(f"{target}: {str(exc).splitlines()[0]}")
        if self.skipped:
            log.warning("hook %s: %d of %d functions not attached: %s", self.compiled.hook.name,
                        len(self.skipped), len(targets), "; ".join(self.skipped[:5]))
        if not self.links:
            raise BpfError(errno.ENOENT, f"{self.compiled.hook.name}: no function of the list could be "
                           f"attached ({'; '.join(self.skipped[:3])})")

    def _attach(self, prog, name: str, target: str) -> Link:
        if name in DIRECTIONS and self.dispatch_slot is not None:
            return self.dispatcher.register(prog, self.dispatch_slot, self.plan.dispatch_nrs)
        if name in ("th_kprobe", "th_kprobe_override", "th_enforcer_kprobe"):
            return prog.attach_kprobe(target)
        if name == "th_kretprobe":
            return prog.attach_kprobe(target, retprobe=True)
        if name == "th_lsm" or name in _IMA_PROGRAMS:
            return prog.attach_lsm()
        if name in ("th_fentry", "th_fexit", "th_fmod_ret"):
            return prog.attach_trace()
        if name == "th_tracepoint":
            subsystem, _, event = target.partition("/")
            return prog.attach_tracepoint(subsystem, event)
        if name == "th_raw_tp":
            return prog.attach_raw_tracepoint(target)
        if name == "th_uprobe":
            hook = self.compiled.hook
            check_uprobe_binary(hook.path)
            return prog.attach_uprobe(hook.path, hook.symbol, hook.offset)
        if name in ("th_usdt", "th_usdt_set"):
            # the kernel increments the point's semaphore while attached
            return prog.attach_uprobe(self.compiled.hook.path, offset=self.usdt.offset,
                                      ref_ctr_offset=self.usdt.ref_ctr_offset)
        return prog.attach()       # raw_tp fallbacks: the section names the tracepoint

    def retarget(self) -> list:
        """Attach this hook's programs again to the file its path names NOW (a
        uprobe/USDT binary replaced, e.g. by a package upgrade: the old links
        stay on the old inode).  The loaded object is reused: no verifier run.
        USDT notes are read again (the point's offset, semaphore and argument
        locations may have moved) and the config rewritten.  Returns the old
        links, still attached: the caller detaches them once it is done with
        the new ones (new before old, as for a policy replace).  On failure
        (the new file lacks the symbol or point...) raises BpfError and leaves
        the hook as it was."""
        before = (self.target_id, self.usdt, self.usdt_args, self.config_bytes())
        self.target_id, self.usdt = None, None
        new: list = []
        try:
            self._configure()
            if self.compiled.hook.kind == "usdt":
                self.obj.map("hook_config").update((0).to_bytes(4, "little"), self.config_bytes())
            for program, target in reversed(self.plan.programs):
                new.append(self._attach(self.obj.program(program), program, target))
        except BaseException:
            for link in new:
                link.destroy()
            self.target_id, self.usdt, self.usdt_args = before[0], before[1], before[2]
            if self.compiled.hook.kind == "usdt" and self.obj is not None:
                self.obj.map("hook_config").update((0).to_bytes(4, "little"), before[3])
            raise
        old, self.links = self.links, new
        return old

    def pinnable_links(self) -> list[Link]:
        """The real links (dispatched halves are registrations: the pinned
        program arrays hold those)."""
        return [link for link in self.links if isinstance(link, Link)]

    def registrations(self) -> list:
        return [link for link in self.links if not isinstance(link, Link)]

    def release(self) -> None:
        """Exit leaving the hook enforcing (pinned): our fds closed, nothing
        taken out of the dispatcher's chains."""
        for link in self.pinnable_links():
            link.destroy()
        self.links = []
        self.dispatch_slot = None
        if self.obj is not None:
            self.obj.close()
            self.obj = None

    def stop(self) -> None:
        # entry first: nothing new is parked while the return half is still there
        while self.links:
            self.links.pop().destroy()
        if self.dispatch_slot is not None:
            self.dispatcher.release_slot(self.dispatch_slot)
            self.dispatch_slot = None
        if self.obj is not None:
            self.obj.close()
            self.obj = None
