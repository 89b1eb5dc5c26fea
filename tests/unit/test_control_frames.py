"""The control protocol's frame reader and request parser: limits and malformed input."""
from __future__ import annotations

import json

import pytest

from tetrahost.control import protocol
from tetrahost.control.protocol import MAX_FRAME, FrameReader, FrameTooLarge, ProtocolError, parse_request


def test_frames_split_across_reads_and_several_per_read():
    r = FrameReader()
    assert r.feed(b'{"a":') == [] and r.partial
    assert r.feed(b'1}\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert r.partial
    assert r.feed(b":3}\n") == [b'{"c":3}'] and not r.partial


def test_a_frame_of_exactly_the_limit_is_accepted_one_byte_more_is_not():
    body = b"x" * (MAX_FRAME - 1)          # + the newline = MAX_FRAME
    r = FrameReader()
    frames = []
    for i in range(0, len(body), 65536):
        frames += r.feed(body[i:i + 65536])
    assert frames == [] and r.partial
    assert r.feed(b"\n") == [body]
    r = FrameReader()
    with pytest.raises(FrameTooLarge) as exc:
        for i in range(0, len(body) + 1, 65536):
            r.feed((body + b"x")[i:i + 65536])
        r.feed(b"\n")
    assert exc.value.size > MAX_FRAME and "2 MiB" in str(exc.value)


def test_an_over_long_line_is_refused_before_it_is_buffered_whole():
    r = FrameReader(limit=100)
    with pytest.raises(FrameTooLarge):
        r.feed(b"y" * 100)                  # no room left for a newline
    assert len(FrameReader(limit=100).feed(b"y" * 99 + b"\n")[0]) == 99
    with pytest.raises(FrameTooLarge):      # complete but too long, in one read
        FrameReader(limit=100).feed(b"ok\n" + b"y" * 150 + b"\n")


def test_a_policy_file_at_the_policy_size_cap_fits_in_one_frame():
    policy = ("# ünïcödé comment\n" + "  - \"/usr/bin/x\"\n" * 60000)[: 1 << 20]
    frame = protocol.request("policy_add", filename="p.yaml", content=policy)
    assert len(frame) <= MAX_FRAME
    assert FrameReader().feed(frame) == [frame[:-1]]
    assert parse_request(frame[:-1])["content"] == policy


@pytest.mark.parametrize("raw, message", [
    (b"nonsense", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b"[1,2]", "not a JSON object"),
    (b'"op"', "not a JSON object"),
    (b'{"op":"status"}', "unsupported protocol version None"),
    (b'{"version":true,"op":"status"}', "unsupported protocol version True"),
    (b'{"version":"1","op":"status"}', "unsupported protocol version '1'"),
    (b'{"version":1}', "unknown op None"),
    (b'{"version":1,"op":["status"]}', "unknown op ['status']"),
    (b'{"version":1,"op":"reboot"}', "unknown op 'reboot'"),
    (b"[" * 100000 + b"]" * 100000, "not JSON"),
])
def test_bad_requests_are_protocol_errors(raw, message):
    with pytest.raises(ProtocolError) as exc:
        parse_request(raw)
    assert message in str(exc.value)


def test_non_utf8_argument_round_trips():
    frame = protocol.request("getevents", filter={"binary": ["a\udcffb"]})
    assert json.loads(frame)["filter"]["binary"] == ["a\udcffb"]
