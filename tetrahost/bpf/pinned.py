"""Objects pinned in bpffs by an earlier agent: links, map fds, and JSON blobs.

bpffs holds only BPF objects and directories, so a document that must live
and die with the pins (the pinned state's manifest) is stored as the value of
a one-element array map, pinned like the rest: an update is a new map pinned
under a temporary name and renamed over the old one (atomic in bpffs).
"""
from __future__ import annotations

import errno
import os

from tetrahost.bpf.errors import BpfError
from tetrahost.bpf.link import Link
from tetrahost.bpf.native import ffi, lib

BPF_MAP_TYPE_ARRAY = 2
_HEADER = 8          # little-endian length of the document, then the document


def obj_get(path: str) -> int:
    """An fd for the object pinned at path (the caller closes it)."""
    fd = lib.bpf_obj_get(os.fsencode(path))
    if fd < 0:
        err = -fd if fd != -1 else ffi.errno
        raise BpfError(err, f"open pinned object {path}")
    return fd


def open_link(path: str, description: str) -> Link:
    """The link pinned at path, owned by a new Link: destroying it closes our
    fd only; the link stays attached while the pin exists."""
    ptr = lib.bpf_link__open(os.fsencode(path))
    if ptr == ffi.NULL:
        raise BpfError(ffi.errno, f"open pinned link {path}")
    return Link(ptr, description)


def map_info(fd: int):
    """struct bpf_map_info of a map fd (type, sizes, name)."""
    info = ffi.new("struct bpf_map_info *")
    size = ffi.new("uint32_t *", ffi.sizeof("struct bpf_map_info"))
    rc = lib.bpf_obj_get_info_by_fd(fd, info, size)
    if rc < 0:
        raise BpfError(-rc, f"info of map fd {fd}")
    return info


def percpu_u64_sums(fd: int, keys) -> dict[int, int]:
    """key -> the sum over CPUs of a per-CPU array of u64 counters known only
    by its fd (a pinned one, e.g. a replaced generation's loss counters)."""
    ncpu = lib.libbpf_num_possible_cpus()
    out = {}
    for key in keys:
        buf = ffi.new("uint64_t[]", max(ncpu, 1))
        rc = lib.bpf_map_lookup_elem(fd, ffi.new("uint32_t *", key), buf)
        if rc < 0:
            raise BpfError(-rc if rc != -1 else ffi.errno, f"read counter {key} of map fd {fd}")
        out[key] = sum(buf[i] for i in range(ncpu))
    return out


def write_blob(path: str, data: bytes, name: str = "th_manifest") -> None:
    """Pin `data` at path, replacing what is there in one rename."""
    size = (_HEADER + len(data) + 7) & ~7
    fd = lib.bpf_map_create(BPF_MAP_TYPE_ARRAY, name.encode(), 4, size, 1, ffi.NULL)
    if fd < 0:
        raise BpfError(-fd, f"create the map for {path}")
    try:
        value = len(data).to_bytes(_HEADER, "little") + data + bytes(size - _HEADER - len(data))
        key = ffi.new("uint32_t *", 0)
        rc = lib.bpf_map_update_elem(fd, key, ffi.from_buffer(value), 0)
        if rc < 0:
            raise BpfError(-rc, f"write {path}")
        tmp = f"{path}_tmp{os.getpid()}"     # bpffs refuses dots in names
        rc = lib.bpf_obj_pin(fd, os.fsencode(tmp))
        if rc < 0:
            raise BpfError(-rc, f"pin {tmp}")
        os.rename(tmp, path)
    finally:
        os.close(fd)


def read_blob(path: str) -> bytes | None:
    """The document pinned at path by write_blob; None if nothing is there.
    ValueError when what is there is not such a document (a foreign map)."""
    try:
        fd = obj_get(path)
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    try:
        info = map_info(fd)
        if info.type != BPF_MAP_TYPE_ARRAY or info.key_size != 4 or info.max_entries != 1 \
                or info.value_size < _HEADER:
            raise ValueError(f"{path} is not a manifest (map type {info.type}, key {info.key_size} B, "
                             f"value {info.value_size} B, {info.max_entries} entries)")
        buf = ffi.new("char[]", info.value_size)
        rc = lib.bpf_map_lookup_elem(fd, ffi.new("uint32_t *", 0), buf)
        if rc < 0:
            raise BpfError(-rc, f"read {path}")
        raw = ffi.buffer(buf, info.value_size)[:]
        length = int.from_bytes(raw[:_HEADER], "little")
        if length > info.value_size - _HEADER:
            raise ValueError(f"{path}: length {length} is larger than the map's value")
        return raw[_HEADER:_HEADER + length]
    finally:
        os.close(fd)
