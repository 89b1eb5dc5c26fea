"""journald native protocol encoding and non-blocking sends (no journald needed: a socket in tmp)."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import time

from tetrahost.events.meta import EventMeta
from tetrahost.export import journald


def parse_entry(data: bytes) -> dict:
    """Decode the native protocol, as journald does."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        head = data[i:nl]
        if b"=" in head:
            k, v = head.split(b"=", 1)
            i = nl + 1
        else:
            k = head
            (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            v = data[nl + 9:nl + 9 + n]
            assert data[nl + 9 + n:nl + 10 + n] == b"\n"
            i = nl + 10 + n
        fields[k.decode()] = v.decode("utf-8", "surrogateescape")
    return fields


def test_encoding_round_trips_newlines_and_binary():
    f = {"MESSAGE": "a=b", "MULTI": "x\ny\n", "N": 5, "SURR": "/tmp/\udcff"}
    assert parse_entry(journald.encode_entry(f)) == {"MESSAGE": "a=b", "MULTI": "x\ny\n", "N": "5",
                                                    "SURR": "/tmp/\udcff"}


def test_event_fields():
    meta = EventMeta(kind="process_lsm", pid=7, binary="/usr/bin/su", exec_id="id7", ktime=0,
                     policy="p", hook="bprm_check_security", action="OVERRIDE", enforced=True)
    line = json.dumps({"process_lsm": {"process": {"binary": "/usr/bin/su"}, "function_name": "bprm_check_security",
                                       "action": "KPROBE_ACTION_OVERRIDE"}, "node_name": "h"})
    f = journald.event_fields(line, meta)
    assert f["PRIORITY"] == 4 and f["TETRAGON_EVENT"] == "PROCESS_LSM" and f["TETRAGON_ACTION"] == "OVERRIDE"
    assert f["MESSAGE"] == "🔒 LSM     h /usr/bin/su bprm_check_security ⛔ OVERRIDE"
    assert "TETRAGON_UNIT" not in f and f["TETRAGON_JSON"] == line
    meta2 = EventMeta(kind="rate_limit_info", pid=0, binary="", exec_id="", ktime=0)
    f = journald.event_fields('{"rate_limit_info":{}}', meta2)
    assert f["MESSAGE"] == "RATE_LIMIT_INFO" and f["PRIORITY"] == 6


def test_an_events_entry_is_the_general_encoding():
    # event_entry builds the datagram in three pieces: the bytes of
    # encode_entry(event_fields(...)), whatever the values hold (newlines take
    # the length-prefixed form, bytes that are not UTF-8 stay those bytes).
    metas = [
        EventMeta(kind="process_exec", pid=7, binary="/usr/bin/su", exec_id="id7", ktime=0),
        EventMeta(kind="process_lsm", pid=7, binary="/usr/bin/su", exec_id="id7", ktime=0, unit="ssh.service",
                  container="c0ffee", workload_namespace="ns", policy="p", hook="bprm_check_security",
                  action="OVERRIDE", enforced=True),
        EventMeta(kind="process_exec", pid=8, binary="/tmp/a\nb", exec_id="id8", ktime=0),       # a newline
        EventMeta(kind="process_exec", pid=9, binary="/tmp/\udcff\x1bé", exec_id="id9", ktime=0),
        EventMeta(kind="process_exit", pid=0, binary="", exec_id="", ktime=0),
    ]
    lines = [json.dumps({"process_exec": {"process": {"binary": "/usr/bin/su"}}, "node_name": "h"}), "a\nb"]
    for meta in metas:
        for line in lines:
            for message in ("🚀 process h /usr/bin/su", "two\nlines", "", "plain \udcfe"):
                fast = journald.event_entry(line, meta, message)
                assert fast == journald.encode_entry(journald.event_fields(line, meta, message)), (meta, message)
    assert parse_entry(journald.event_entry(lines[0], metas[2], "m"))["TETRAGON_BINARY"] == "/tmp/a\nb"


def test_stuck_journal_drops_and_counts_after_a_bounded_wait(tmp_path):
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)                       # nobody reads: its queue fills up
    sink = journald.JournaldSink(path, max_stall=0.5)
    meta = EventMeta(kind="process_exec", pid=1, binary="/bin/x", exec_id="e", ktime=0)
    batch = [(json.dumps({"x": "y" * 200}), meta)] * 5000
    t0 = time.monotonic()
    sink.write_events(batch)
    took = time.monotonic() - t0
    assert 0.5 <= took < 5, took            # waited for the stalled journal once, not per entry
    assert sink.stats.dropped > 0 and sink.stats.events > 0
    assert sink.stats.lost_by_reason == {"journald_busy": sink.stats.dropped}
    assert sink.stats.events + sink.stats.dropped == 5000 and sink.stats.errors == 0
    got = parse_entry(server.recv(1 << 20))
    assert got["SYSLOG_IDENTIFIER"] == "tetrahost"
    sink.close()
    server.close()


def test_a_burst_faster_than_the_journal_reads_is_delivered_whole(tmp_path):
    """A journal that reads slower than the sink writes (its socket queue holds
    net.unix.max_dgram_qlen datagrams) gets every entry: the sink waits for room."""
    import threading

    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    got: list[str] = []
    done = threading.Event()

    def slow_reader():
        server.settimeout(2.0)
        while not done.is_set() or len(got) < 2000:
            try:
                got.append(parse_entry(server.recv(1 << 20))["TETRAGON_EXEC_ID"])
            except TimeoutError:
                return
            if len(got) % 50 == 0:
                time.sleep(0.05)            # a journal busy elsewhere now and then

    reader = threading.Thread(target=slow_reader)
    reader.start()
    sink = journald.JournaldSink(path)
    batch = [(json.dumps({"n": i}), EventMeta(kind="process_exec", pid=1, binary="/bin/x", exec_id=f"e{i}",
                                               ktime=0)) for i in range(2000)]
    sink.write_events(batch)
    done.set()
    reader.join()
    sink.close()
    server.close()
    assert sink.stats.dropped == 0 and sink.stats.events == 2000, sink.stats
    assert got == [f"e{i}" for i in range(2000)]


def test_no_journald_is_an_error_not_an_exception(tmp_path):
    sink = journald.JournaldSink(str(tmp_path / "absent.sock"))
    meta = EventMeta(kind="process_exec", pid=1, binary="/bin/x", exec_id="e", ktime=0)
    sink.write_events([("{}", meta)] * 3)
    assert sink.stats.errors == 1 and sink.stats.dropped == 3
    assert not journald.journal_available(str(tmp_path / "absent.sock"))


def test_the_agent_builds_journal_entries_on_a_worker_thread(tmp_path, monkeypatch):
    """build_outputs puts JournaldSink behind ThreadedSink: building an entry (a JSON parse for
    MESSAGE) and sending it happen off the thread that hands over the batch, the ring-buffer consumer."""
    import threading

    from tetrahost import config
    from tetrahost.cli.run_cmd import build_outputs
    from tetrahost.export.sinks import ThreadedSink

    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    real_sink, real_fields = journald.JournaldSink, journald.event_fields
    threads = []

    def recording_fields(line, meta):
        threads.append(threading.current_thread())
        return real_fields(line, meta)

    monkeypatch.setattr(journald, "journal_available", lambda: True)
    monkeypatch.setattr(journald, "JournaldSink", lambda: real_sink(path))
    monkeypatch.setattr(journald, "event_fields", recording_fields)
    cfg = config.Config()
    cfg.export.filenames, cfg.metrics.enabled, cfg.systemd.notify = [], False, False
    _sinks, _components, exporters = build_outputs(cfg, "n")
    (sink,) = exporters
    assert isinstance(sink, ThreadedSink) and sink.name == "journald"

    meta = EventMeta(kind="process_exec", pid=1, binary="/bin/x", exec_id="e", ktime=0)
    sink.write_events([('{"process_exec":{}}', meta)] * 3)
    sink.close()                            # drains the queue before closing the socket
    assert len(threads) == 3 and threading.current_thread() not in threads
    assert sink.stats.events == 3 and sink.stats.dropped == 0
    assert parse_entry(server.recv(1 << 20))["TETRAGON_EVENT"] == "PROCESS_EXEC"
    server.close()


def test_an_entry_too_big_for_a_datagram_goes_as_a_sealed_memfd(tmp_path):
    """Bigger than net.core.wmem_max allows (EMSGSIZE): libsystemd's way, a
    sealed memfd passed alone.  The payload is sent as it is, whatever the
    machine's wmem_max: the memfd path is taken on every machine."""
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    entry = journald.encode_entry({"MESSAGE": "big", "TETRAGON_JSON": "x" * 300_000})
    sender = journald.JournalSocket(path)
    try:
        assert sender._send_memfd(entry, socket.MSG_DONTWAIT) is True
        data, fds, _flags, _addr = socket.recv_fds(server, 16, 1)
        assert data == b"" and len(fds) == 1
        try:
            assert os.pread(fds[0], len(entry) + 1, 0) == entry      # journald reads it from offset 0
            seals = fcntl.fcntl(fds[0], fcntl.F_GET_SEALS)
        finally:
            os.close(fds[0])
        assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
    finally:
        sender.close()
        server.close()
