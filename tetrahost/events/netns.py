"""Network namespaces and interfaces by number: inode -> name, ifindex -> name.

Hosts have no pods: a network namespace is known by its inode (what the
kernel puts in events) and, when someone named it with `ip netns add` (or
pyroute2's netns.create), by a bind mount under /run/netns.  Interface names
come from netlink (pyroute2), inside the namespace the index belongs to; the
kernel side only knows the name of a `net_device` argument by itself.

Lookups run on the event path, so everything is cached: names by inode are
re-read from /run/netns at most every `ttl` seconds when an inode is unknown,
interface names are kept per (netns inode, ifindex) for `ttl` seconds
(including "not found", so an unknown index costs one netlink dump per ttl).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

RUN_NETNS = "/run/netns"

# (netns name or None for the agent's own namespace, ifindex) -> interface name or None
LinkLookup = Callable[["str | None", int], "str | None"]


def own_netns_inode(proc: str = "/proc") -> int:
    try:
        return os.stat(f"{proc}/self/ns/net").st_ino
    except OSError:
        return 0


def named_namespaces(run_netns: str = RUN_NETNS, mounted_only: bool = True) -> dict[int, str]:
    """inode -> name of every namespace bind-mounted under run_netns.  A file
    left behind without its mount (same device as the directory) is skipped."""
    out: dict[int, str] = {}
    try:
        names = sorted(os.listdir(run_netns))
        dir_dev = os.stat(run_netns).st_dev
    except OSError:
        return out
    for name in names:
        try:
            st = os.stat(os.path.join(run_netns, name))
        except OSError:
            continue
        if mounted_only and st.st_dev == dir_dev:
            continue
        out.setdefault(st.st_ino, name)
    return out


def pyroute2_link_name(netns: str | None, ifindex: int) -> str | None:
    """The name of interface ifindex in netns (None: the agent's own) via netlink."""
    from pyroute2 import IPRoute

    kwargs = {"netns": netns} if netns else {}
    with IPRoute(**kwargs) as ipr:
        links = ipr.get_links(ifindex)
        for link in links:
            name = link.get_attr("IFLA_IFNAME")
            if name:
                return name
    return None


class NetnsResolver:
    def __init__(self, run_netns: str = RUN_NETNS, proc: str = "/proc", ttl: float = 5.0,
                 link_lookup: LinkLookup = pyroute2_link_name, clock: Callable[[], float] = time.monotonic,
                 mounted_only: bool = True):
        self.run_netns = run_netns
        self.mounted_only = mounted_only
        self.ttl = ttl
        self.own = own_netns_inode(proc)
        self._link_lookup = link_lookup
        self._clock = clock
        self._lock = threading.Lock()
        self._names: dict[int, str] = {}
        self._names_read = float("-inf")
        self._links: dict[tuple[int, int], tuple[float, str | None]] = {}

    def name(self, inum: int) -> str | None:
        """The /run/netns name of the namespace with this inode, if it has one."""
        if not inum:
            return None
        with self._lock:
            if inum not in self._names and self._clock() - self._names_read >= self.ttl:
                self._names = named_namespaces(self.run_netns, self.mounted_only)
                self._names_read = self._clock()
            return self._names.get(inum)

    def ifname(self, inum: int, ifindex: int) -> str | None:
        """The name of interface ifindex in the namespace with inode inum, when
        that namespace is the agent's own or a named one."""
        if not ifindex:
            return None
        key = (inum, ifindex)
        now = self._clock()
        with self._lock:
            hit = self._links.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                return hit[1]
        if inum in (0, self.own):
            where = None
        else:
            where = self.name(inum)
            if where is None:        # an anonymous namespace: no way in by name
                return None
        try:
            found = self._link_lookup(where, ifindex)
        except Exception as exc:     # netlink refused (no root, namespace gone...)
            log.debug("ifindex %d in netns %s: %s", ifindex, where or "(own)", exc)
            found = None
        with self._lock:
            if len(self._links) > 4096:
                self._links.clear()
            self._links[key] = (now, found)
        return found


_default: NetnsResolver | None = None


def default_resolver() -> NetnsResolver:
    global _default
    if _default is None:
        _default = NetnsResolver()
    return _default
