"""Export allow/deny lists, field filters, rate limit with rate_limit_info; stdout sink formats."""
from __future__ import annotations

import io
import json

import pytest

from tetrahost.events.meta import EventMeta
from tetrahost.export.filters import ExportPipeline, FilterError, RateLimiter, parse_filter_list
from tetrahost.export.sinks import LineSink, SinkStats


class Collect:
    name = "collect"

    def __init__(self):
        self.stats = SinkStats()
        self.lines: list[str] = []
        self.closed = False

    def write_events(self, batch):
        self.lines.extend(line for line, _ in batch)

    def close(self):
        self.closed = True


def ev(kind="process_exec", pid=10, binary="/usr/bin/curl", policy="", unit="", ns="", action=""):
    meta = EventMeta(kind=kind, pid=pid, binary=binary, exec_id=f"id{pid}", ktime=0, unit=unit,
                     workload_namespace=ns, policy=policy, action=action)
    line = json.dumps({kind: {"process": {"pid": pid, "binary": binary, "cap": {"effective": ["X"]},
                                          "ns": {"uts": {}}, "cwd": "/"},
                              "parent": {"pid": 1, "cap": {}, "binary": "/sbin/init"}},
                       "node_name": "n", "time": "t"}, separators=(",", ":"))
    return line, meta


def run(pipeline_kwargs, events):
    out = Collect()
    p = ExportPipeline([out], **pipeline_kwargs)
    p.write_events(events)
    return out, p


EVENTS = [ev(), ev("process_exit", 11, "/usr/bin/ls"), ev("process_kprobe", 12, "/tmp/xmrig", policy="p1"),
          ev("process_exec", 13, "/usr/sbin/cron", unit="cron.service", ns="system.slice"),
          ev("process_lsm", 14, "/usr/bin/su", policy="p2")]


def pids(out):
    return [json.loads(x)[next(iter(json.loads(x)))]["process"]["pid"] for x in out.lines]


@pytest.mark.parametrize("spec,expected", [
    ([{"event_set": ["PROCESS_EXEC"]}], [10, 13]),
    ([{"binary_regex": ["^/usr/bin/", "xmrig$"]}], [10, 11, 12, 14]),
    ([{"pid": [11, 14]}], [11, 14]),
    ([{"policy_names": ["p1"]}], [12]),
    ([{"namespace": ["system.slice"]}], [13]),
    ([{"unit": ["cron.service"]}], [13]),
    ([{"event_set": ["PROCESS_EXEC"], "binary_regex": ["curl"]}], [10]),       # AND within a filter
    ([{"pid": [10]}, {"policy_names": ["p2"]}], [10, 14]),                        # OR across filters
])
def test_allow_list(spec, expected):
    out, p = run({"allow": parse_filter_list(spec)}, EVENTS)
    assert pids(out) == expected
    assert p.filtered == len(EVENTS) - len(expected)


def test_deny_list_and_both():
    out, _ = run({"deny": parse_filter_list([{"binary_regex": ["/usr/bin/"]}])}, EVENTS)
    assert pids(out) == [12, 13]
    out, _ = run({"allow": parse_filter_list([{"event_set": ["PROCESS_EXEC", "PROCESS_EXIT"]}]),
                  "deny": parse_filter_list('{"pid":[11]}\n\n{"unit":["cron.service"]}\n')}, EVENTS)
    assert pids(out) == [10]


@pytest.mark.parametrize("spec,msg", [
    ([{"pid_set": [1]}], "unknown filter key"),
    ([{"event_set": ["PROCESS_FOO"]}], "unknown event type"),
    ([{"pid": ["x"]}], "process ids"),
    ([{"pid": []}], "non-empty list"),
    ([{}], "empty filter"),
    ('{"pid": [1]}\n[1]', "line 2: not a JSON object"),
])
def test_bad_filters(spec, msg):
    with pytest.raises(FilterError, match=msg):
        parse_filter_list(spec)


def test_field_filter_drops_process_and_parent_fields():
    out, _ = run({"drop_process_fields": ["cap", "ns"]}, EVENTS[:1])
    e = json.loads(out.lines[0])["process_exec"]
    assert "cap" not in e["process"] and "ns" not in e["process"] and "cap" not in e["parent"]
    assert e["process"]["binary"] == "/usr/bin/curl" and e["process"]["cwd"] == "/"


def test_rate_limit_drops_and_reports():
    now = [0.0]
    out = Collect()
    p = ExportPipeline([out], rate_limit=60, node_name="node1", clock=lambda: now[0])
    p.write_events([ev(pid=i) for i in range(100)])
    assert len(out.lines) == 60 and p.rate_limited == 40
    now[0] = 10.0                               # 60/min refills 10 tokens in 10 s
    p.write_events([ev(pid=i) for i in range(100)])
    assert len(out.lines) == 70 and p.rate_limited == 130
    p.report()
    info = json.loads(out.lines[-1])
    assert info["rate_limit_info"] == {"number_of_dropped_process_events": "130"}
    assert info["node_name"] == "node1" and info["time"].endswith("Z")
    p.report()                                  # nothing new dropped: no second report
    assert len(out.lines) == 71
    p.close()
    assert out.closed


def test_rate_limiter_refills_to_capacity_only():
    now = [0.0]
    r = RateLimiter(120, clock=lambda: now[0])
    assert r.allow(200) == 120
    now[0] = 3600.0
    assert r.allow(1000) == 120


def test_pipeline_isolates_a_failing_exporter():
    class Broken(Collect):
        def write_events(self, batch):
            raise RuntimeError("boom")

    good = Collect()
    p = ExportPipeline([Broken(), good])
    p.write_events(EVENTS)
    assert len(good.lines) == len(EVENTS)


def test_stdout_sink_json_and_compact():
    buf = io.StringIO()
    LineSink(buf, "stdout", owns_stream=False).write_events(EVENTS[:2])
    assert [json.loads(x)["node_name"] for x in buf.getvalue().splitlines()] == ["n", "n"]
    buf = io.StringIO()
    s = LineSink(buf, "stdout", owns_stream=False, compact=True)
    s.write_events(EVENTS[:2] + [('{"rate_limit_info":{}}', EVENTS[0][1])])
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("🚀 process n /usr/bin/curl")
    assert lines[1].startswith("💥 exit") and lines[2] == '{"rate_limit_info":{}}'
    assert s.stats.events == 3 and s.stats.bytes == len(buf.getvalue().encode())
