"""An attachment of a program to a hook; destroying it detaches."""
from __future__ import annotations

from tetrahost.bpf.native import check_rc, ffi, lib


class Link:
    def __init__(self, ptr, description: str):
        self._ptr = ptr
        self.description = description   # e.g. "raw_tp/sched_process_exec"

    @property
    def fd(self) -> int:
        return lib.bpf_link__fd(self._require())

    def pin(self, path: str) -> None:
        check_rc(lib.bpf_link__pin(self._require(), path.encode()), f"pin link {self.description} at {path}")

    def unpin(self) -> None:
        check_rc(lib.bpf_link__unpin(self._require()), f"unpin link {self.description}")

    def destroy(self) -> None:
        if self._ptr is not None:
            lib.bpf_link__destroy(self._ptr)
            self._ptr = None

    @property
    def attached(self) -> bool:
        return self._ptr is not None

    def _require(self):
        if self._ptr is None:
            raise ValueError(f"link {self.description} is destroyed")
        return self._ptr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    def __del__(self):  # a forgotten link must not keep a hook attached forever
        if getattr(self, "_ptr", None) is not None and ffi is not None:
            self.destroy()

    def __repr__(self):
        return f"<Link {self.description} {'attached' if self._ptr else 'destroyed'}>"
