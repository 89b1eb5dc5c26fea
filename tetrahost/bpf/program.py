"""A BPF program inside an object, and the ways to attach it."""
from __future__ import annotations

from tetrahost.bpf.link import Link
from tetrahost.bpf.native import capture_log, check_ptr, check_rc, ffi, lib


class Program:
    def __init__(self, obj, ptr):
        self._obj = obj          # keeps the object (and so the program) alive
        self._ptr = ptr
        self.name = ffi.string(lib.bpf_program__name(ptr)).decode()
        self.section = ffi.string(lib.bpf_program__section_name(ptr)).decode()

    # -- before load -------------------------------------------------------
    @property
    def autoload(self) -> bool:
        return bool(lib.bpf_program__autoload(self._ptr))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        check_rc(lib.bpf_program__set_autoload(self._ptr, bool(value)), f"set autoload of {self.name}")

    def set_attach_target(self, function: str) -> None:
        """fentry/fexit/fmod_ret/lsm: choose the kernel function at run time."""
        check_rc(lib.bpf_program__set_attach_target(self._ptr, 0, function.encode()),
                 f"set attach target of {self.name} to {function}")

    # -- after load --------------------------------------------------------
    @property
    def fd(self) -> int:
        return lib.bpf_program__fd(self._ptr)

    @property
    def prog_type(self) -> int:
        return lib.bpf_program__type(self._ptr)

    @property
    def verified_insns(self) -> int:
        """Instructions the verifier processed to load this program (0 before
        kernel 5.16, which does not say): its cost, and its distance to the
        kernel's 1M limit."""
        info = ffi.new("struct bpf_prog_info *")
        size = ffi.new("uint32_t *", ffi.sizeof("struct bpf_prog_info"))
        check_rc(lib.bpf_obj_get_info_by_fd(self.fd, info, size), f"info of {self.name}")
        return info.verified_insns

    def attach(self) -> Link:
        """Attach as the section name says (e.g. SEC("raw_tp/sched_process_exec"))."""
        return self._attach(lambda: lib.bpf_program__attach(self._ptr), self.section)

    def attach_tracepoint(self, category: str, name: str) -> Link:
        return self._attach(lambda: lib.bpf_program__attach_tracepoint(self._ptr, category.encode(), name.encode()),
                            f"tracepoint/{category}/{name}")

    def attach_raw_tracepoint(self, name: str) -> Link:
        return self._attach(lambda: lib.bpf_program__attach_raw_tracepoint(self._ptr, name.encode()),
                            f"raw_tp/{name}")

    def attach_kprobe(self, function: str, retprobe: bool = False) -> Link:
        kind = "kretprobe" if retprobe else "kprobe"
        return self._attach(lambda: lib.bpf_program__attach_kprobe(self._ptr, retprobe, function.encode()),
                            f"{kind}/{function}")

    def attach_uprobe(self, binary: str, symbol: str = "", offset: int = 0, pid: int = -1,
                      ref_ctr_offset: int = 0) -> Link:
        """A uprobe on `symbol` (+ offset) of the ELF file `binary`, or at file
        offset `offset` when no symbol is given; pid -1: in every process.
        ref_ctr_offset: file offset of a USDT semaphore the kernel increments
        while the probe is attached (0: none)."""
        opts = ffi.new("struct bpf_uprobe_opts *")
        opts.sz = ffi.sizeof("struct bpf_uprobe_opts")
        opts.ref_ctr_offset = ref_ctr_offset
        name = ffi.new("char[]", symbol.encode()) if symbol else ffi.NULL
        opts.func_name = name
        where = f"{binary}:{symbol or hex(offset)}" + (f"+{offset:#x}" if symbol and offset else "")
        return self._attach(lambda: lib.bpf_program__attach_uprobe_opts(self._ptr, pid, binary.encode(),
                                                                         offset, opts),
                            f"uprobe/{where}")

    def attach_trace(self) -> Link:
        """fentry, fexit and fmod_ret: the target was fixed before load."""
        return self._attach(lambda: lib.bpf_program__attach_trace(self._ptr), self.section)

    def attach_lsm(self) -> Link:
        return self._attach(lambda: lib.bpf_program__attach_lsm(self._ptr), self.section)

    def _attach(self, call, description: str) -> Link:
        if self.fd < 0:
            raise ValueError(f"program {self.name} is not loaded")
        with capture_log() as lines:
            ptr = call()
            check_ptr(ptr, f"attach {self.name} to {description}", lines)
        return Link(ptr, description)

    def __repr__(self):
        return f"<Program {self.name} {self.section}>"
