"""JSON export file: rotation by size and count, gzip, mode 0600, never a lost or split line."""
from __future__ import annotations

import gzip
import json
import os
import random
import stat
import threading

from tetrahost.events.meta import EventMeta
from tetrahost.export.rotating import RotatingFileSink
from tetrahost.export.sinks import ThreadedSink

META = EventMeta(kind="process_exec", pid=1, binary="/bin/x", exec_id="e", ktime=0)


def line(i: int) -> str:
    # Varying lengths, so rotation points fall everywhere inside batches.
    return json.dumps({"process_exec": {"process": {"pid": i, "arguments": "a" * (i % 97)}}, "seq": i},
                      separators=(",", ":"))


def read_all(sink: RotatingFileSink) -> list[bytes]:
    data = []
    for path in sink.backups() + [sink.path]:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            data.append(f.read())
    return data


def test_rotation_under_load_loses_and_splits_nothing(tmp_path):
    n = 200_000
    sink = RotatingFileSink(str(tmp_path / "tetragon.log"), max_bytes=64 * 1024, max_backups=0)
    rng = random.Random(1)
    i = 0
    while i < n:
        k = min(rng.randint(1, 500), n - i)
        sink.write_events([(line(j), META) for j in range(i, i + k)])
        i += k
    sink.close()
    files = read_all(sink)
    assert len(files) > 100
    seen = []
    for blob in files:
        assert len(blob) <= 64 * 1024
        assert blob.endswith(b"\n")          # every file ends on a line boundary
        for raw in blob.splitlines():
            seen.append(json.loads(raw)["seq"])
    assert seen == list(range(n))           # each line exactly once, in order across files
    assert sink.stats.events == n and sink.stats.dropped == 0 and sink.stats.errors == 0
    assert sink.rotations == len(files) - 1


def test_rotation_behind_a_thread_with_concurrent_batches(tmp_path):
    inner = RotatingFileSink(str(tmp_path / "t.log"), max_bytes=16 * 1024, max_backups=0)
    sink = ThreadedSink(inner, max_events=10_000_000)
    for b in range(2000):
        sink.write_events([(line(b * 10 + j), META) for j in range(10)])
    sink.close()
    seqs = [json.loads(raw)["seq"] for blob in read_all(inner) for raw in blob.splitlines()]
    assert seqs == list(range(20_000))


def test_mode_0600_even_for_an_existing_file(tmp_path):
    path = tmp_path / "sub" / "t.log"
    os.makedirs(path.parent)
    path.write_text("")
    os.chmod(path, 0o644)
    sink = RotatingFileSink(str(path), max_bytes=200, max_backups=0)
    sink.write_events([(line(i), META) for i in range(20)])
    sink.close()
    for p in sink.backups() + [sink.path]:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p


def test_count_limit_and_compression(tmp_path):
    sink = RotatingFileSink(str(tmp_path / "tetragon.log"), max_bytes=4096, max_backups=3, compress=True)
    for i in range(0, 3000, 30):
        sink.write_events([(line(j), META) for j in range(i, i + 30)])
    sink.close()
    backups = sink.backups()
    assert len(backups) == 3 and all(b.endswith(".log.gz") for b in backups)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    seqs = [json.loads(raw)["seq"] for blob in read_all(sink) for raw in blob.splitlines()]
    # the newest files are kept, contiguous up to the last line written
    assert seqs == list(range(seqs[0], 3000))
    for b in backups:
        assert stat.S_IMODE(os.stat(b).st_mode) == 0o600


def test_a_line_longer_than_max_gets_its_own_file(tmp_path):
    sink = RotatingFileSink(str(tmp_path / "t.log"), max_bytes=100, max_backups=0)
    long = json.dumps({"x": "y" * 300})
    sink.write_events([(line(1), META), (long, META), (line(2), META)])
    sink.close()
    blobs = read_all(sink)
    assert [b.count(b"\n") for b in blobs] == [1, 1, 1]
    assert json.loads(blobs[1]) == {"x": "y" * 300}


def test_reopen_appends_and_counts_existing_size(tmp_path):
    path = str(tmp_path / "t.log")
    s1 = RotatingFileSink(path, max_bytes=1000)
    s1.write_events([(line(i), META) for i in range(3)])
    s1.close()
    s2 = RotatingFileSink(path, max_bytes=1000)
    assert s2._size == os.path.getsize(path)
    s2.write_events([(line(i), META) for i in range(3, 30)])
    s2.close()
    seqs = [json.loads(raw)["seq"] for blob in read_all(s2) for raw in blob.splitlines()]
    assert seqs == list(range(30))


def test_threaded_sink_drops_and_counts_when_full():
    gate = threading.Event()

    class Slow:
        name = "slow"

        def __init__(self):
            from tetrahost.export.sinks import SinkStats
            self.stats = SinkStats()
            self.got = 0

        def write_events(self, batch):
            gate.wait()
            self.got += len(batch)
            self.stats.events += len(batch)

        def close(self):
            pass

    inner = Slow()
    sink = ThreadedSink(inner, max_events=100)
    for _ in range(50):                     # never blocks, however stuck the worker is
        sink.write_events([(line(0), META)] * 10)
    gate.set()
    sink.close()
    assert inner.got + inner.stats.dropped == 500
    assert inner.stats.dropped >= 300        # at most one batch in the worker + max_events queued


def test_wait_idle_returns_once_the_queued_events_are_written(tmp_path):
    """The agent waits for this before saying ready (the pinned backlog is written first)."""
    started, release = threading.Event(), threading.Event()

    class Slow:
        name = "slow"

        def __init__(self):
            self.stats = RotatingFileSink(str(tmp_path / "unused.log")).stats
            self.written = 0

        def write_events(self, batch):
            started.set()
            release.wait(5)
            self.written += len(batch)

        def close(self):
            pass

    inner = Slow()
    sink = ThreadedSink(inner)
    sink.write_events([(line(i), META) for i in range(3)])
    assert started.wait(5)
    assert sink.wait_idle(0.2) is False and inner.written == 0      # still being written
    release.set()
    assert sink.wait_idle(5) is True and inner.written == 3
    sink.close()


def test_a_clock_stepped_back_does_not_prune_a_newer_file(tmp_path, monkeypatch):
    """Rotated files are named by time and the oldest names are pruned: a wall
    clock that steps back between rotations must not make a newer file look older."""
    import time as time_module
    clock = iter([1000.5, 1000.5, 999.0, 999.0, 998.0, 998.0] + [998.0] * 100)
    monkeypatch.setattr(time_module, "time", lambda: next(clock))
    sink = RotatingFileSink(str(tmp_path / "tetragon.log"), max_bytes=200, max_backups=2)
    for i in range(0, 40, 4):
        sink.write_events([(line(j), META) for j in range(i, i + 4)])
    sink.close()
    seqs = [json.loads(raw)["seq"] for blob in read_all(sink) for raw in blob.splitlines()]
    assert seqs == list(range(seqs[0], 40))
