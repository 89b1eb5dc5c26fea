"""The JSON export file on a real full file system: a small tmpfs mounted for
the test (root), filled up, then written to.  Every line in the file must be
whole JSON, losses must be counted as ENOSPC, and writing must resume by
itself once space is freed."""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from tetrahost.events.meta import EventMeta
from tetrahost.export.rotating import RotatingFileSink

pytestmark = [pytest.mark.needs_root]

META = EventMeta(kind="process_exec", pid=1, binary="/bin/x", exec_id="e", ktime=0)


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / f"full-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tetrahost-test", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def events(start: int, n: int) -> list:
    # ~300-byte lines: a page boundary falls inside lines, so a full disk cuts one.
    return [(json.dumps({"process_exec": {"seq": i, "arguments": "x" * (250 + i % 37)}}), META)
            for i in range(start, start + n)]


def lines_in(path) -> list[int]:
    blob = open(path, "rb").read()
    assert blob.endswith(b"\n"), "the file ends in the middle of a line"
    return [json.loads(raw.decode("utf-8"))["process_exec"]["seq"] for raw in blob.splitlines()]


def test_enospc_leaves_only_whole_lines_and_counts_losses(small_fs):
    path = small_fs / "log" / "tetragon.log"
    sink = RotatingFileSink(str(path), max_bytes=10 << 20)
    filler = small_fs / "filler"
    with open(filler, "wb") as f:                       # leave ~20 KiB
        f.write(b"\0" * (256 - 20) * 1024)
    seq = 0
    while not sink.stats.dropped:
        sink.write_events(events(seq, 40))
        seq += 40
        assert seq < 10_000, "the file system never filled up"
    for _ in range(3):                                   # keep failing: no partial lines pile up
        sink.write_events(events(seq, 40))
        seq += 40
    written = lines_in(path)
    assert written == list(range(len(written)))
    assert sink.stats.events == len(written)
    assert sink.stats.lost_by_reason.get("ENOSPC", 0) == sink.stats.dropped == seq - len(written)
    assert sink.stats.errors >= 4

    os.unlink(filler)                                    # space again: writing resumes
    sink.write_events(events(seq, 10))
    assert lines_in(path) == written + list(range(seq, seq + 10))
    assert sink.stats.events == len(written) + 10
    sink.close()


def test_directory_removed_on_a_full_disk_then_space_freed(small_fs):
    path = small_fs / "log" / "tetragon.log"
    sink = RotatingFileSink(str(path), max_bytes=10 << 20)
    sink.write_events(events(0, 5))
    subprocess.run(["rm", "-rf", str(small_fs / "log")], check=True)
    filler = small_fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass                                             # full (the old file's page is still ours)
    finally:
        os.close(fd)
    # Reopening frees the deleted file's page: part of the batch fits, the rest must not
    # leave a partial line behind.
    sink.write_events(events(5, 40))
    written = lines_in(path)
    assert written == list(range(5, 5 + len(written))) and len(written) < 40
    assert sink.reopens == 1
    assert sink.stats.events == 5 + len(written)
    assert sink.stats.lost_by_reason == {"ENOSPC": 40 - len(written)}
    os.unlink(filler)
    sink.write_events(events(100, 5))
    assert lines_in(path) == written + list(range(100, 105))
    assert sink.stats.events == 10 + len(written)
    sink.close()
