"""decode -> enrich -> Event -> sinks: each form of an event is made once and
only when a sink wants it, the compact line comes from the event's dict (the
same line format_line makes from the JSON), and no sink on the agent's path
parses an event's JSON back."""
import io
import json
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from test_hook_fragments import hook_state, rec
from test_proccache import exec_rec, exit_rec, seeded_cache

from tetrahost.bpf.native import lib
from tetrahost.events.enrich import Enricher
from tetrahost.export import journald
from tetrahost.export.compact import format_line
from tetrahost.export.filters import ExportPipeline
from tetrahost.export.hook_json import HookEventRenderer
from tetrahost.export.sinks import LineSink, SinkStats, ThreadedSink
from tetrahost.export.tetragon_json import TetragonJSON


def enricher(fake_proc, host_fields=False):
    cache = seeded_cache(fake_proc)
    base = TetragonJSON("host1", process_cred=True, process_ns=True)
    base.host_fields = host_fields
    hs = hook_state()
    hs.events, hs.hook_id = 0, 1
    dropped = {}
    e = Enricher(cache, base, HookEventRenderer(base, cache), lambda i: hs if i == 1 else None, dropped,
                 lambda *a: None)
    return e, cache, hs, dropped


KILL = lib.TH_ACTION_SIGKILL


def events(fake_proc, host_fields=False, e=None):
    if e is None:
        e = enricher(fake_proc, host_fields)[0]
    out = [e.event(exec_rec(200, 100, 1_000_000, binary=b"/usr/bin/cat", args=[b"a b", b"\x1b[2J"]))]
    out.append(e.event(rec(2_000_000_000)))
    out.append(e.event(rec(2_000_000_001, selector=1, action=KILL, path=b"/tmp/\x1b]0;x")))
    out.append(e.event(exit_rec(200, 3_000_000_000, code=9)))
    return out


@pytest.mark.parametrize("host_fields", [False, True])
def test_compact_and_dict_from_the_renderers_match_the_line(fake_proc, host_fields):
    e = enricher(fake_proc, host_fields)[0]
    for ev in events(fake_proc, e=e):
        assert ev.data == json.loads(ev.json)
        assert ev.compact == format_line(ev.json)
    for ev in events(fake_proc, e=e):           # compact first, before any JSON was made
        compact = ev.compact
        assert ev.json_made is None and compact == format_line(ev.json)


def test_each_form_is_made_once(fake_proc):
    e, cache, hs, _ = enricher(fake_proc)
    calls = []
    real = e.hook_renderer.render
    e.hook_renderer.render = lambda *a: calls.append(1) or real(*a)
    ev = e.event(rec(2_000_000_000))
    assert calls == []                       # nothing made before a sink asks
    assert ev.json is ev.json and ev.compact is ev.compact
    line, meta = ev                          # still usable as a (line, meta) pair
    assert line == ev.json and meta is ev.meta and ev[1] is ev.meta
    assert calls == [1]


def test_enrich_counts_and_drops(fake_proc):
    e, cache, hs, dropped = enricher(fake_proc)
    assert e.event(rec(1, pid=200)).meta.pid == 200 and hs.events == 1
    r = rec(2)
    r.hook_id = 99
    assert e.event(r) is None and dropped == {"unknown_hook": 1}
    unknown = e.event(rec(3, pid=4242, tid=4242))
    assert unknown.meta.pid == 4242 and unknown.meta.binary == ""
    killed = e.event(rec(4, selector=1, action=KILL))
    assert killed.meta.action == "SIGKILL" and killed.meta.enforced
    assert e.event(rec(5, selector=1, action=KILL, monitor=True)).meta.action == "POST"


class Recorder:
    name = "recorder"

    def __init__(self, wants):
        self.wants = wants
        self.stats = SinkStats()
        self.batches = []

    def write_events(self, batch):
        self.batches.append(batch)

    def close(self):
        pass


def bare_agent(sinks):
    from tetrahost.daemon import Agent
    agent = Agent.__new__(Agent)
    agent.counters = SimpleNamespace(events={})
    agent._batch = []
    agent.sinks = sinks
    return agent


def test_the_agent_makes_only_what_its_sinks_read(fake_proc):
    e, cache, hs, _ = enricher(fake_proc)
    made = []
    e.hook_renderer.render = lambda *a: made.append("json") or "{}"
    agent = bare_agent([Recorder(())])
    agent._emit(e.event(rec(1)))
    agent._flush()
    assert made == []                         # a metrics-only agent renders no JSON
    queued = ThreadedSink(Recorder(("json",)))
    agent.sinks = [Recorder(()), queued]
    agent._emit(e.event(rec(2)))
    agent._flush()
    assert made == ["json"]                   # made on this thread, as the exporter queued it
    queued.close()


def test_a_batch_an_exporter_drops_is_not_rendered_for_it(fake_proc):
    """Under a flood a full exporter drops batches (counted): the forms only it
    reads are not made for them, so the loop's time goes to the exporters
    that take the events (journald full: the file's lines are still made,
    journald's one-liners are not)."""
    e, cache, hs, _ = enricher(fake_proc)
    made = []
    real_json, real_data = e.hook_renderer.render, e.hook_renderer.event_dict
    e.hook_renderer.render = lambda *a: made.append("json") or real_json(*a)
    e.hook_renderer.event_dict = lambda *a: made.append("data") or real_data(*a)

    class Gated(Recorder):
        def __init__(self, wants):
            super().__init__(wants)
            self.gate = threading.Event()

        def write_events(self, batch):
            assert self.gate.wait(10)
            super().write_events(batch)

    file, journal = Gated(("json",)), Gated(("json", "compact"))
    file_q, journal_q = ThreadedSink(file, max_events=1), ThreadedSink(journal, max_events=1)
    agent = bare_agent([file_q, journal_q])

    def flush(n):
        made.clear()
        agent._emit(e.event(rec(n)))
        agent._flush()
        return list(made)

    assert flush(1) == ["json", "data"]      # the JSON once, and the dict journald's one-liner is made of
    deadline = time.monotonic() + 10
    while not (file_q._writing and journal_q._writing) and time.monotonic() < deadline:
        time.sleep(0.001)                    # both workers now hold batch 1 in their (gated) write
    assert flush(2) == ["json", "data"]      # queued by both: both queues are full now
    file.gate.set()
    assert file_q.wait_idle(10)              # the file wrote; journald's queue is still full
    assert flush(3) == ["json"] and journal.stats.dropped == 1 and file.stats.dropped == 0
    file_q.max_events = 0                    # now neither has room
    assert flush(4) == [] and journal.stats.dropped == 2 and file.stats.dropped == 1
    journal.gate.set()
    for q in (file_q, journal_q):
        q.close()
    assert [len(b) for b in file.batches] == [1, 1, 1] and [len(b) for b in journal.batches] == [1, 1]
    assert all(ev.compact for b in journal.batches for ev in b)     # read on its thread: made before


def test_a_queued_event_holds_its_forms_not_its_record(fake_proc):
    """Once its exporters queued an event, it lets go of the record, hook and
    process it was made from (a queue of events under a flood is then only
    their lines), and a form nobody asked for is an error, not a render on an
    exporter's thread."""
    e, cache, hs, _ = enricher(fake_proc)
    recorder = Recorder(("json",))
    queued = ThreadedSink(recorder)
    agent = bare_agent([queued])
    agent._emit(e.event(rec(1)))
    agent._flush()
    queued.close()
    (event,) = recorder.batches[0]
    assert event.json.startswith("{") and event._source == ()
    with pytest.raises(ValueError, match="was not prepared"):
        event.data


@pytest.fixture
def no_json_parsing(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("an event's JSON was parsed back")
    monkeypatch.setattr(json, "loads", refuse)
    try:
        import orjson
        monkeypatch.setattr(orjson, "loads", refuse)
    except ImportError:
        pass


def test_no_sink_parses_the_json_back(fake_proc, tmp_path, no_json_parsing):
    batch = events(fake_proc)
    out = io.StringIO()
    LineSink(out, "stdout", owns_stream=False, compact=True).write_events(batch)
    assert out.getvalue().splitlines()[1] == "📬️ openat  host1 /usr/bin/cat /etc/passwd"
    assert "\\x1b" in out.getvalue() and "\x1b" not in out.getvalue()     # escaped for a terminal
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    sink = journald.JournaldSink(path)
    sink.write_events(batch)
    assert sink.stats.events == len(batch)
    first = server.recv(1 << 20)
    assert b"MESSAGE=\xf0\x9f\x9a\x80 process host1 /usr/bin/cat" in first
    sink.close()
    server.close()
    kept = Recorder(("json",))
    pipeline = ExportPipeline([kept], drop_process_fields=["cap", "ns"])
    pipeline.write_events(batch)
    (dropped,) = kept.batches
    assert all('"ns":' not in ev.json for ev in dropped)
    assert dropped[1].data["process_kprobe"]["process"]["binary"] == "/usr/bin/cat"


def test_field_filter_keeps_the_renderers_dicts_intact(fake_proc):
    batch = events(fake_proc)
    before = batch[1].json
    ExportPipeline([Recorder(("json",))], drop_process_fields=["cap", "ns"]).write_events(batch)
    assert json.loads(before) == batch[1].data        # the shared dicts were not mutated
    assert '"ns":' in batch[1].json


@pytest.mark.parametrize("host_fields, process_cred", [(False, True), (True, True), (False, False)])
def test_compact_line_of_a_process_event_from_its_pieces(fake_proc, host_fields, process_cred):
    # The compact line of an exec/exit is made from its pieces
    # (TetragonJSON.compact_line), not from the whole dict: it must be the
    # line the whole dict gives, escapes, redaction, the CAP_SYS_ADMIN mark
    # (with export.process_cred, as the dict has the capabilities then),
    # signal and status included.
    from tetrahost.events.records import Caps
    from tetrahost.export.compact import compact_of, format_event
    from tetrahost.export.redaction import Redactor
    e, _, _, _ = enricher(fake_proc, host_fields)
    e.renderer.redactor = Redactor([{"redact": [r"pass=(\w+)"]}])
    e.renderer.process_cred = process_cred
    admin = Caps(effective=1 << 21, permitted=(1 << 21) | 1, inheritable=0)
    made = [
        e.event(exec_rec(300, 100, 5_000_000, binary=b"/opt/\xff\x1b[2J", caps=admin,
                         args=[b"pass=hunter2", b"\xe2\x80\xae", b"tab\there", b""])),
        e.event(exec_rec(301, 100, 6_000_000, binary=b"/usr/bin/env", args=())),
        e.event(exit_rec(300, 7_000_000, code=9)),            # killed by SIGKILL
        e.event(exit_rec(301, 8_000_000, code=3 << 8)),       # exit status 3
    ]
    for ev in made:
        line = ev.compact                   # from the pieces: no dict made for it
        assert ev._data is None
        assert line == format_event(ev.data) == compact_of(ev)
    assert "hunter2" not in made[0].compact and ("CAP_SYS_ADMIN" in made[0].compact) == process_cred
    assert "\\x1b[2J" in made[0].compact and "\x1b" not in made[0].compact
    assert '"" SIGKILL' in made[2].compact and made[3].compact.endswith("/usr/bin/env 3")


def test_kept_texts_never_carry_a_previous_binary(fake_proc):
    # An entry keeps its exported texts (binary, unit...) and a clone shares its
    # parent's; the exec that follows is a new entry with its own.
    from test_proccache import fork_rec
    e, cache, _, _ = enricher(fake_proc)
    shell = e.event(exec_rec(300, 100, 5_000_000, binary=b"/usr/bin/bash"))
    assert shell.meta.binary == "/usr/bin/bash" and json.loads(shell.json)["process_exec"]["process"]["binary"] \
        == "/usr/bin/bash"
    e.event(fork_rec(301, 300, 6_000_000))
    clone = cache.get_pid(301)
    assert clone.texts is cache.get_pid(300).texts          # shared: same binary, same workload
    child = e.event(exec_rec(301, 300, 7_000_000, binary=b"/usr/bin/cat"))
    assert child.meta.binary == "/usr/bin/cat" and cache.get_pid(301).texts[0] == "/usr/bin/cat"
    process = json.loads(child.json)["process_exec"]["process"]
    assert process["binary"] == "/usr/bin/cat" and "clone" not in process["flags"]
    assert json.loads(child.json)["process_exec"]["parent"]["binary"] == "/usr/bin/bash"
    gone = e.event(exit_rec(301, 8_000_000))
    assert gone.meta.binary == "/usr/bin/cat" and "/usr/bin/cat" in gone.compact
