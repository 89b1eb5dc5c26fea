"""Linux namespace inodes, and which of them belong to the host.

A namespace is identified by the inode number behind /proc/<pid>/ns/<kind>
(the link reads "pid:[4026531836]").  The host's namespaces are those of pid 1
(ARCHITECTURE.md: `host_ns` is resolved from /proc/1/ns/*); a process whose
inode for a kind equals pid 1's is "in the host namespace" for that kind.

Reading /proc/1/ns needs CAP_SYS_PTRACE over pid 1 (root).  When none of it
can be read (a sandbox whose init hides it), HostNamespaces.from_proc takes
the agent's own namespaces and says so; a kind still unknown has inode 0,
which no real namespace has, so `is_host` answers False rather than guessing.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from tetrahost.events.records import NAMESPACE_KINDS

__all__ = ["NAMESPACE_KINDS", "HostNamespaces", "parse_ns_link", "read_ns_inodes"]

log = logging.getLogger(__name__)


def parse_ns_link(target: str) -> int:
    """Inode number from a ns link target such as "net:[4026531840]"; 0 if malformed."""
    start = target.find("[")
    end = target.rfind("]")
    if start < 0 or end <= start:
        return 0
    try:
        return int(target[start + 1:end])
    except ValueError:
        return 0


def read_ns_inodes(proc_root: str, pid: int | str) -> tuple[int, ...]:
    """The 10 namespace inodes of a process, NAMESPACE_KINDS order; 0 where unreadable.

    A missing kind is normal on older kernels (time ns before 5.6) or without
    permission, so a single failure does not drop the others.  The caller
    finds out the process vanished from its other reads (stat, status).
    """
    base = f"{proc_root}/{pid}/ns/"
    inodes = []
    for kind in NAMESPACE_KINDS:
        try:
            inodes.append(parse_ns_link(os.readlink(base + kind)))
        except OSError:
            inodes.append(0)
    return tuple(inodes)


@dataclass(frozen=True, slots=True)
class HostNamespaces:
    """Namespace inodes of pid 1, one per kind (0 when unknown)."""

    inodes: tuple[int, ...]

    @classmethod
    def from_proc(cls, proc_root: str = "/proc") -> "HostNamespaces":
        """pid 1's namespaces; where pid 1's ns links cannot be read (a
        sandbox whose init hides them), the agent's own, with a warning:
        the agent runs as a host service, so its namespaces are the host's."""
        inodes = read_ns_inodes(proc_root, 1)
        if not any(inodes):
            own = read_ns_inodes(proc_root, "self")
            if any(own):
                log.warning("cannot read %s/1/ns: taking the agent's own namespaces as the host's", proc_root)
                return cls(own)
        return cls(inodes)

    @classmethod
    def unknown(cls) -> "HostNamespaces":
        return cls((0,) * len(NAMESPACE_KINDS))

    def inode(self, kind: str) -> int:
        return self.inodes[NAMESPACE_KINDS.index(kind)]

    def is_host(self, kind: str, inum: int) -> bool:
        host = self.inode(kind)
        return host != 0 and inum == host

    def is_host_all(self, inodes: tuple[int, ...]) -> tuple[bool, ...]:
        """is_host for every kind at once (NAMESPACE_KINDS order): the exporter's fast path."""
        return tuple(h != 0 and i == h for h, i in zip(self.inodes, inodes))

    def as_dict(self) -> dict[str, int]:
        return dict(zip(NAMESPACE_KINDS, self.inodes))
