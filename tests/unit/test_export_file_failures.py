"""JSON export file under failures: short writes, EIO/ENOSPC, the file or its
directory removed or moved, a partial line left by a crash.  The file must
only ever hold whole lines, and every event is counted exactly once: exported
if its line is in a linked file, else lost with a reason."""
from __future__ import annotations

import errno
import json
import os
import shutil

from tetrahost.events.meta import EventMeta
from tetrahost.export import rotating
from tetrahost.export.rotating import RotatingFileSink

META = EventMeta(kind="process_exec", pid=1, binary="/bin/x", exec_id="e", ktime=0)


def batch(start: int, n: int) -> list:
    return [(json.dumps({"process_exec": {"seq": i, "pad": "p" * (i % 50)}}), META)
            for i in range(start, start + n)]


def seqs(path: str) -> list[int]:
    with open(path, "rb") as f:
        blob = f.read()
    assert blob == b"" or blob.endswith(b"\n")
    return [json.loads(raw)["process_exec"]["seq"] for raw in blob.splitlines()]


class FaultyOS:
    """The os module, except that write() fails after `budget` more bytes."""

    def __init__(self, budget: int, err: int = errno.EIO):
        self.budget = budget
        self.err = err

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        if self.budget <= 0:
            raise OSError(self.err, os.strerror(self.err))
        n = os.write(fd, bytes(data[:self.budget]))      # a short write, as a full disk gives
        self.budget -= n
        return n

    def writev(self, fd, buffers):
        return self.write(fd, b"".join(buffers))


def test_short_write_then_eio_leaves_whole_lines_and_counts_the_rest(tmp_path, monkeypatch):
    path = str(tmp_path / "t.log")
    sink = RotatingFileSink(path)
    sink.write_events(batch(0, 10))
    monkeypatch.setattr(rotating, "os", FaultyOS(budget=1000))   # dies in the middle of a line
    sink.write_events(batch(10, 100))
    written = seqs(path)
    assert written[:10] == list(range(10)) and len(written) < 110
    assert written == list(range(len(written)))            # no partial line, nothing out of order
    assert sink.stats.events == len(written)
    assert sink.stats.dropped == 110 - len(written)
    assert sink.stats.lost_by_reason == {"EIO": 110 - len(written)}
    assert sink.stats.errors == 1
    # The disk works again: the next batch lands after the last whole line.
    monkeypatch.setattr(rotating, "os", os)
    sink.write_events(batch(500, 5))
    assert seqs(path) == written + list(range(500, 505))
    assert sink.stats.events == len(written) + 5
    sink.close()


def test_failure_on_the_first_byte_writes_nothing(tmp_path, monkeypatch):
    path = str(tmp_path / "t.log")
    sink = RotatingFileSink(path)
    monkeypatch.setattr(rotating, "os", FaultyOS(budget=0, err=errno.ENOSPC))
    sink.write_events(batch(0, 7))
    assert os.path.getsize(path) == 0
    assert sink.stats.events == 0 and sink.stats.lost_by_reason == {"ENOSPC": 7}
    monkeypatch.setattr(rotating, "os", os)
    sink.close()


def test_directory_removed_and_recreated_between_batches(tmp_path):
    d = tmp_path / "log"
    path = str(d / "tetragon.log")
    sink = RotatingFileSink(path)
    sink.write_events(batch(0, 20))
    shutil.rmtree(d)
    d.mkdir()
    sink.write_events(batch(20, 30))
    assert seqs(path) == list(range(20, 50))        # landed in the new file, not the deleted one
    assert sink.reopens == 1
    assert sink.stats.events == 50 and sink.stats.dropped == 0
    sink.close()


def test_directory_removed_for_good_is_recreated(tmp_path):
    d = tmp_path / "log"
    path = str(d / "tetragon.log")
    sink = RotatingFileSink(path)
    sink.write_events(batch(0, 3))
    shutil.rmtree(d)
    sink.write_events(batch(3, 4))
    assert seqs(path) == [3, 4, 5, 6]
    assert oct(os.stat(d).st_mode & 0o777) == oct(0o700)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
    sink.close()


def test_unopenable_directory_counts_losses_and_recovers(tmp_path):
    d = tmp_path / "log"
    path = str(d / "tetragon.log")
    sink = RotatingFileSink(path)
    shutil.rmtree(d)
    d.write_text("a file where the directory was")      # makedirs fails: EEXIST / ENOTDIR
    sink.write_events(batch(0, 4))
    assert sink.stats.events == 0 and sink.stats.dropped == 4
    assert sum(sink.stats.lost_by_reason.values()) == 4
    d.unlink()
    sink.write_events(batch(4, 2))
    assert seqs(path) == [4, 5] and sink.stats.events == 2
    sink.close()


def test_moved_file_keeps_its_lines_and_a_new_file_starts(tmp_path):
    path = str(tmp_path / "t.log")
    sink = RotatingFileSink(path)
    sink.write_events(batch(0, 5))
    os.rename(path, path + ".1")                         # logrotate without copytruncate
    sink.write_events(batch(5, 5))
    assert seqs(path + ".1") == list(range(5))
    assert seqs(path) == list(range(5, 10))
    assert sink.stats.events == 10 and sink.stats.dropped == 0 and sink.reopens == 1
    sink.close()


def test_file_removed_during_the_write_is_written_again(tmp_path):
    path = str(tmp_path / "t.log")

    class RemovedMidWrite(RotatingFileSink):
        removals = 1

        def _write_pieces(self, pieces):
            super()._write_pieces(pieces)
            if self.removals:
                self.removals -= 1
                os.unlink(self.path)                     # after our write, before the check

    sink = RemovedMidWrite(path)
    sink.write_events(batch(0, 8))
    assert seqs(path) == list(range(8))
    assert sink.stats.events == 8 and sink.stats.dropped == 0 and sink.reopens == 1
    sink.close()


def test_file_removed_before_a_rotation_inside_a_batch(tmp_path):
    path = str(tmp_path / "t.log")

    class RemovedMidWrite(RotatingFileSink):
        removals = 1

        def _write_pieces(self, pieces):
            super()._write_pieces(pieces)
            if self.removals:
                self.removals -= 1
                os.unlink(self.path)                     # the rotation's rename finds nothing

    sink = RemovedMidWrite(path, max_bytes=1500, max_backups=0)
    sink.write_events(batch(0, 60))
    sink.close()
    seen = [s for p in sink.backups() + [path] for s in seqs(p)]
    assert sorted(seen) == list(range(60)) and len(seen) == 60
    assert sink.stats.events == 60 and sink.stats.dropped == 0 and sink.reopens == 1


def test_file_removed_during_the_write_and_rewrite_failing_counts_file_removed(tmp_path, monkeypatch):
    path = str(tmp_path / "t.log")

    class RemovedMidWrite(RotatingFileSink):
        def _write_pieces(self, pieces):
            super()._write_pieces(pieces)
            os.unlink(self.path)
            monkeypatch.setattr(rotating, "os", FaultyOS(budget=0))   # and the disk fails

    sink = RemovedMidWrite(path)
    sink.write_events(batch(0, 8))
    monkeypatch.setattr(rotating, "os", os)
    assert sink.stats.events == 0
    assert sink.stats.lost_by_reason == {"file_removed": 8}
    sink.close()


def test_partial_line_of_a_crashed_run_is_cut_at_open(tmp_path):
    path = tmp_path / "t.log"
    path.write_bytes(b'{"process_exec":{"seq":0}}\n{"process_exec":{"seq":1}}\n{"proc')
    sink = RotatingFileSink(str(path))
    sink.write_events(batch(2, 2))
    assert seqs(str(path)) == [0, 1, 2, 3]
    sink.close()


def test_file_without_any_newline_is_emptied_at_open(tmp_path):
    path = tmp_path / "t.log"
    path.write_bytes(b"\0" * 70000)                      # zeros after a power loss
    sink = RotatingFileSink(str(path))
    sink.write_events(batch(0, 1))
    assert seqs(str(path)) == [0]
    sink.close()


def test_rotation_with_failures_counts_each_event_once(tmp_path, monkeypatch):
    path = str(tmp_path / "t.log")
    sink = RotatingFileSink(path, max_bytes=2000, max_backups=0)
    total = 0
    for round_ in range(20):
        budget = 3000 if round_ % 3 == 0 else 10**9
        monkeypatch.setattr(rotating, "os", FaultyOS(budget=budget))
        sink.write_events(batch(total, 60))
        total += 60
    monkeypatch.setattr(rotating, "os", os)
    sink.close()
    seen = []
    for p in sink.backups() + [path]:
        seen += seqs(p)
    assert len(seen) == len(set(seen))
    assert sink.stats.events == len(seen)
    assert sink.stats.events + sink.stats.dropped == total
    assert sink.stats.dropped == sink.stats.lost_by_reason.get("EIO", 0) > 0


def test_batches_beyond_one_writev_stay_whole_and_in_order(tmp_path, monkeypatch):
    """Over 1024 lines go out in several writev calls; a failure in a later
    one still leaves only whole lines, in order, and the counts add up."""
    path = str(tmp_path / "t.log")
    sink = RotatingFileSink(path)
    sink.write_events(batch(0, 2500))
    assert seqs(path) == list(range(2500)) and sink.stats.events == 2500
    one_writev = sum(len(line) + 1 for line, _ in batch(0, 1024))
    monkeypatch.setattr(rotating, "os", FaultyOS(budget=one_writev + 5000))   # inside the second call
    sink.write_events(batch(2500, 2500))
    written = seqs(path)
    assert 2500 + 1024 < len(written) < 5000 and written == list(range(len(written)))
    assert sink.stats.events == len(written) and sink.stats.dropped == 5000 - len(written)
    sink.close()


def big_batch(start: int, n: int) -> list:
    """Lines of ~3 KB: a batch spans many of the sink's joined pieces."""
    return [(json.dumps({"process_exec": {"seq": i, "pad": "p" * (3000 + i % 97)}}), META)
            for i in range(start, start + n)]


def test_a_failure_inside_a_later_piece_keeps_whole_lines_and_counts_each_once(tmp_path, monkeypatch):
    path = str(tmp_path / "t.log")
    sink = RotatingFileSink(path)
    lines = rotating.encode_pieces([line for line, _ in big_batch(0, 100)])
    assert len(lines) > 5       # the failure below lands past the first pieces
    monkeypatch.setattr(rotating, "os", FaultyOS(budget=100_000 + 1234))
    sink.write_events(big_batch(0, 100))
    monkeypatch.setattr(rotating, "os", os)
    written = seqs(path)
    assert 0 < len(written) < 100 and written == list(range(len(written)))
    assert sink.stats.events == len(written) and sink.stats.lost_by_reason == {"EIO": 100 - len(written)}
    assert sink.stats.bytes == os.path.getsize(path)
    sink.close()


def test_pieces_are_the_lines_joined_and_bounded():
    lines = [line for line, _ in big_batch(0, 200)] + ["{}"]
    pieces = rotating.encode_pieces(lines)
    assert b"".join(data for data, _ in pieces) == "".join(line + "\n" for line in lines).encode()
    assert sum(n for _, n in pieces) == len(lines)
    assert all(data.count(b"\n") == n for data, n in pieces)
    longest = max(len(line) for line in lines)
    assert all(len(data) < rotating.PIECE_BYTES + longest + n for data, n in pieces)
    assert rotating.encode_pieces([]) == []
