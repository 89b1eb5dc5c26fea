"""process_lsm.ima_hash: the kernel's (enum hash_algo, digest) as Tetragon
renders it, and the hook record's fields decoded from the kernel's bytes."""
from __future__ import annotations

import hashlib

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.decode import decode
from tetrahost.export.ima import ima_hash_text


def test_sha256_is_algorithm_colon_hex_of_its_32_bytes():
    digest = hashlib.sha256(b"x").digest()
    assert ima_hash_text(4, digest + b"\0" * 32) == "sha256:" + digest.hex()


def test_sha1_and_sha512_lengths():
    assert ima_hash_text(2, bytes(range(64))) == "sha1:" + bytes(range(20)).hex()
    assert ima_hash_text(6, bytes(range(64))) == "sha512:" + bytes(range(64)).hex()


def test_no_hash_renders_nothing():
    assert ima_hash_text(-1, b"") == ""


def test_record_decodes_algorithm_and_digest():
    ev = ffi.new("struct th_hook_event *")
    ev.hdr.op = lib.TH_OP_HOOK
    ev.hdr.size = ffi.sizeof(ev[0])
    ev.ima_algo = 4
    digest = hashlib.sha256(b"y").digest()
    ffi.memmove(ev.ima_digest, digest, len(digest))
    rec = decode(ffi.buffer(ev)[:])
    assert rec.ima_algo == 4 and rec.ima_digest[:32] == digest
    ev.ima_algo = -1
    assert decode(ffi.buffer(ev)[:]).ima_digest == b""
