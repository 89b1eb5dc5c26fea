"""Python objects over libbpf (through the cffi extension tetrahost._libbpf)."""
from tetrahost.bpf.errors import BpfError
from tetrahost.bpf.link import Link
from tetrahost.bpf.maps import Map
from tetrahost.bpf.object import BpfObject
from tetrahost.bpf.program import Program
from tetrahost.bpf.ringbuf import RingBuffer

__all__ = ["BpfError", "BpfObject", "Link", "Map", "Program", "RingBuffer"]
