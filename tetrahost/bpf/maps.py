"""BPF maps: typed lookup/update/delete/iteration over raw bytes or cffi types.

Keys and values are given as cffi type names (e.g. "uint32_t", "struct th_exec")
so layouts come from csrc/events.h; per-CPU maps return one value per possible
CPU, as the kernel lays them out (each slot rounded up to 8 bytes).
"""
from __future__ import annotations

import errno
import mmap

from tetrahost.bpf.native import check_rc, ffi, lib

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
_PERCPU_TYPES = {5, 6, 10, 21}  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE


def mmap_array(map_fd: int, value_type: str, count: int):
    """A BPF_F_MMAPABLE array map's values, shared with the programs: (the
    mapping, which must outlive them, and a cffi `value_type[count]` over it)."""
    size = ffi.sizeof(value_type) * count
    mm = mmap.mmap(map_fd, mmap.PAGESIZE * ((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE),
                   mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    return mm, ffi.from_buffer(f"{value_type}[]", mm)


class Map:
    def __init__(self, obj, ptr):
        self._obj = obj
        self._ptr = ptr
        self.name = ffi.string(lib.bpf_map__name(ptr)).decode()
        self.key_size = lib.bpf_map__key_size(ptr)
        self.value_size = lib.bpf_map__value_size(ptr)
        self.map_type = lib.bpf_map__type(ptr)
        self.key_type = self.value_type = None

    @property
    def fd(self) -> int:
        return lib.bpf_map__fd(self._ptr)

    @property
    def max_entries(self) -> int:
        return lib.bpf_map__max_entries(self._ptr)

    @max_entries.setter
    def max_entries(self, n: int) -> None:
        check_rc(lib.bpf_map__set_max_entries(self._ptr, n), f"resize map {self.name} to {n}")

    @property
    def per_cpu(self) -> bool:
        return self.map_type in _PERCPU_TYPES

    def typed(self, key_type: str, value_type: str) -> "Map":
        """Declare the cffi types of keys and values; checks their sizes."""
        for what, ctype, size in (("key", key_type, self.key_size), ("value", value_type, self.value_size)):
            if ffi.sizeof(ctype) != size:
                raise TypeError(f"map {self.name}: {what} type {ctype} is {ffi.sizeof(ctype)} bytes, map has {size}")
        self.key_type, self.value_type = key_type, value_type
        return self

    # -- element access ----------------------------------------------------
    def _key(self, key):
        if self.key_type is None:
            return ffi.from_buffer(bytes(key))
        return ffi.new(f"{self.key_type} *", key)

    def _value_buf(self):
        slot = (self.value_size + 7) & ~7
        count = lib.libbpf_num_possible_cpus() if self.per_cpu else 1
        return ffi.new("char[]", slot * count), slot, count

    def _unpack(self, buf, slot: int, count: int):
        values = []
        for cpu in range(count):
            raw = ffi.buffer(buf + cpu * slot, self.value_size)[:]
            values.append(raw if self.value_type is None else ffi.cast(f"{self.value_type} *", ffi.from_buffer(raw))[0])
        return values if self.per_cpu else values[0]

    def lookup(self, key, default=None):
        buf, slot, count = self._value_buf()
        rc = lib.bpf_map_lookup_elem(self.fd, self._key(key), buf)
        if rc == -errno.ENOENT or (rc < 0 and ffi.errno == errno.ENOENT):
            return default
        check_rc(rc, f"lookup in map {self.name}")
        return self._unpack(buf, slot, count)

    def update(self, key, value, flags: int = BPF_ANY) -> None:
        if self.value_type is not None and not isinstance(value, (bytes, bytearray)):
            value = ffi.buffer(ffi.new(f"{self.value_type} *", value))[:]
        check_rc(lib.bpf_map_update_elem(self.fd, self._key(key), ffi.from_buffer(bytes(value)), flags),
                 f"update map {self.name}")

    def delete(self, key) -> bool:
        rc = lib.bpf_map_delete_elem(self.fd, self._key(key))
        if rc < 0 and (rc == -errno.ENOENT or ffi.errno == errno.ENOENT):
            return False
        check_rc(rc, f"delete from map {self.name}")
        return True

    def keys(self):
        """Iterate keys (raw bytes, or the key type's value when typed)."""
        cur = ffi.NULL
        nxt = ffi.new("char[]", self.key_size)
        while lib.bpf_map_get_next_key(self.fd, cur, nxt) == 0:
            raw = ffi.buffer(nxt, self.key_size)[:]
            yield raw if self.key_type is None else ffi.cast(f"{self.key_type} *", ffi.from_buffer(raw))[0]
            cur = ffi.from_buffer(raw)

    def items(self):
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def sum_per_cpu(self, key) -> int:
        """Sum a per-CPU counter (value type uint64_t)."""
        values = self.lookup(key, default=None)
        if values is None:
            return 0
        return sum(int.from_bytes(v, "little") if isinstance(v, bytes) else int(v) for v in values)

    def reuse_fd(self, other: "Map") -> None:
        """Before load: make this map the same kernel map as `other` (e.g. one
        ring buffer shared by every object)."""
        check_rc(lib.bpf_map__reuse_fd(self._ptr, other.fd), f"share map {other.name} with {self.name}")

    def reuse_fd_number(self, fd: int) -> None:
        """reuse_fd for a map known only by an fd (e.g. a pinned one; libbpf dups it)."""
        check_rc(lib.bpf_map__reuse_fd(self._ptr, fd), f"reuse fd {fd} as map {self.name}")

    # -- pinning -----------------------------------------------------------
    def pin(self, path: str) -> None:
        check_rc(lib.bpf_map__pin(self._ptr, path.encode()), f"pin map {self.name} at {path}")

    def unpin(self, path: str) -> None:
        check_rc(lib.bpf_map__unpin(self._ptr, path.encode()), f"unpin map {self.name} from {path}")

    def __repr__(self):
        return f"<Map {self.name} type={self.map_type} key={self.key_size}B value={self.value_size}B>"
