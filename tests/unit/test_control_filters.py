import pytest

from tetrahost.control import protocol
from tetrahost.control.filters import parse_filter
from tetrahost.control.protocol import ProtocolError
from tetrahost.events.meta import EventMeta

EXEC = EventMeta(kind="process_exec", pid=10, binary="/usr/bin/curl", exec_id="x", ktime=1,
                 unit="nginx.service", workload_namespace="system.slice")
KILL = EventMeta(kind="process_kprobe", pid=11, binary="/tmp/xmrig", exec_id="y", ktime=2,
                 container="abcdef0123456789", workload_namespace="docker", policy="block-cryptominers",
                 action="SIGKILL", enforced=True)


@pytest.mark.parametrize("spec, exec_in, kill_in", [
    ({}, True, True),
    ({"process_only": True}, True, False),
    ({"event_types": ["PROCESS_KPROBE"]}, False, True),
    ({"event_types": ["process_exec", "PROCESS_KPROBE"], "process_only": True}, True, False),
    ({"binary": ["curl$"]}, True, False),
    ({"binary": ["^/tmp/", "nomatch"]}, False, True),
    ({"pids": [11]}, False, True),
    ({"policy_names": ["block-cryptominers"]}, False, True),
    ({"units": ["nginx*"]}, True, False),
    ({"units": ["nginx.service"]}, True, False),
    ({"containers": ["ABCDEF"]}, False, True),
    ({"namespaces": ["system.slice"]}, True, False),
    ({"namespaces": ["docker", "system.slice"]}, True, True),
    ({"namespaces": ["docker"], "binary": ["curl"]}, False, False),
])
def test_filters_include_and_exclude(spec, exec_in, kill_in):
    f = parse_filter(spec)
    assert (f.matches(EXEC), f.matches(KILL)) == (exec_in, kill_in)


@pytest.mark.parametrize("spec, message", [
    ({"bogus": 1}, "unknown field"),
    ({"event_types": ["PROCESS_NOPE"]}, "unknown PROCESS_NOPE"),
    ({"binary": ["("]}, "bad regular expression"),
    ({"pids": ["1"]}, "list of integers"),
    ({"units": [""]}, "non-empty strings"),
    ([], "expected an object"),
])
def test_bad_filters_are_refused(spec, message):
    with pytest.raises(ProtocolError, match=message):
        parse_filter(spec)


def test_request_parsing():
    assert protocol.parse_request(protocol.request("status").rstrip()) == {"version": 1, "op": "status"}
    for raw, message in [(b"{", "not JSON"), (b"[]", "not a JSON object"),
                         (b'{"op":"status"}', "unsupported protocol version None"),
                         (b'{"version":1,"op":"explode"}', "unknown op")]:
        with pytest.raises(ProtocolError, match=message):
            protocol.parse_request(raw)


def test_event_lines_round_trip_byte_exact():
    line = '{"process_exec":{"process":{"binary":"/tmp/x\\udcff"}}}'
    wrapped = protocol.event_line(line)
    assert wrapped.endswith(b"}\n")
    assert protocol.unwrap_event(wrapped.decode().rstrip("\n")) == line
    assert protocol.unwrap_event('{"dropped":3,"dropped_total":9}') is None
    assert protocol.error("nope") == b'{"version":1,"ok":false,"error":"nope"}\n'
