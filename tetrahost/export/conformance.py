"""Does an exported line parse as Tetragon's tetragon.GetEventsResponse?

Checked against tetragon_schema.json, which scripts/gen_tetragon_schema.py
generates from Tetragon's API reference at a named commit, with protobuf's
JSON mapping as Tetragon writes it (protojson, proto field names):

  * every key must be a field of its message: an unknown field is an error;
  * int32/uint32 (and their wrappers) are JSON numbers in range, int64/uint64
    are JSON strings of decimal digits; bool is true/false; bytes is base64;
  * enums are their value names, and only names the enum has;
  * google.protobuf.Timestamp is RFC 3339 in UTC ("...T10:20:30.123456789Z");
  * a oneof has at most one member set (the event kind, a KprobeArgument).

The only member outside Tetragon's schema that is accepted is the top-level
"tetrahost" object of `export.host_fields = true`, and only when the caller
allows it; its own fields are checked against HOST_MESSAGES below, so it
cannot drift either.

validate_line(line) returns a list of "path: message" errors (empty = ok).
"""
from __future__ import annotations

import base64
import binascii
import json
import pathlib
import re
from functools import lru_cache

SCHEMA_PATH = pathlib.Path(__file__).with_name("tetragon_schema.json")
ROOT = "GetEventsResponse"
HOST_KEY = "tetrahost"

# The oneofs of the .proto files (protoc-gen-doc's tables do not mark them).
ONEOFS = {
    "GetEventsResponse": ("process_exec", "process_exit", "process_kprobe", "process_tracepoint",
                          "process_loader", "process_uprobe", "process_throttle", "process_lsm",
                          "process_usdt", "test", "rate_limit_info"),
}
# KprobeArgument: every field but "label" is a member of `oneof arg`.
_ARG_ONEOF_EXCEPT = ("label",)

# tetrahost's own extension (docs/outputs.md, "Host fields"), same notation as the schema.
HOST_MESSAGES = {
    "tetrahost.Host": {
        "process": ["tetrahost.Process", ""], "parent": ["tetrahost.Process", ""],
        "selector": ["uint32", ""], "attach": ["string", ""], "monitor": ["bool", ""],
        "monitor_action": ["KprobeAction", ""], "signal": ["string", ""], "signal_failed": ["bool", ""],
        "socket_owner": ["bool", ""], "path_unresolved": ["bool", ""], "return_value": ["json_int", ""],
        "args": ["map<string,tetrahost.Arg>", ""], "return": ["tetrahost.Arg", ""],
        "return_arg": ["KprobeArgument", ""],
        "action": ["KprobeAction", ""],      # process_uprobe/usdt: ProcessUprobe/ProcessUsdt have no action field
        # USDT Set: the argument written, the value, and whether the write failed
        "set_arg": ["uint32", ""], "set_value": ["json_int", ""], "set_failed": ["bool", ""],
    },
    "tetrahost.Process": {
        "cgroup": ["string", ""], "unit": ["string", ""], "slice": ["string", ""],
        "workload_namespace": ["string", ""], "container": ["tetrahost.Container", ""],
    },
    "tetrahost.Container": {"runtime": ["string", ""], "id": ["string", ""], "name": ["string", ""]},
    "tetrahost.Arg": {
        "netns": ["uint32", ""], "netns_name": ["string", ""], "ifindex": ["uint32", ""],
        "ifname": ["string", ""], "read_error": ["string", ""], "signature_checked": ["bool", ""],
    },
}

_INT_RANGES = {"int32": (-(1 << 31), (1 << 31) - 1), "uint32": (0, (1 << 32) - 1),
               "sint32": (-(1 << 31), (1 << 31) - 1), "fixed32": (0, (1 << 32) - 1),
               "sfixed32": (-(1 << 31), (1 << 31) - 1)}
_LONG_RANGES = {"int64": (-(1 << 63), (1 << 63) - 1), "uint64": (0, (1 << 64) - 1),
                "sint64": (-(1 << 63), (1 << 63) - 1), "fixed64": (0, (1 << 64) - 1),
                "sfixed64": (-(1 << 63), (1 << 63) - 1)}
_WRAPPERS = {"google.protobuf.UInt32Value": "uint32", "google.protobuf.Int32Value": "int32",
             "google.protobuf.UInt64Value": "uint64", "google.protobuf.Int64Value": "int64",
             "google.protobuf.BoolValue": "bool", "google.protobuf.StringValue": "string",
             "google.protobuf.BytesValue": "bytes", "google.protobuf.DoubleValue": "double",
             "google.protobuf.FloatValue": "float"}
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6}|\.\d{9})?Z$")
_DECIMAL = re.compile(r"^-?\d+$")


@lru_cache(maxsize=1)
def schema() -> dict:
    data = json.loads(SCHEMA_PATH.read_text())
    data["messages"] = {**data["messages"], **HOST_MESSAGES}
    return data


def tetragon_version() -> str:
    t = schema()["tetragon"]
    return f"{t['repository']}@{t['commit']}"


def enum_values(name: str) -> tuple[str, ...]:
    return tuple(schema()["enums"][name])


class _Checker:
    def __init__(self):
        s = schema()
        self.messages, self.enums = s["messages"], s["enums"]
        self.errors: list[str] = []

    def err(self, path: str, msg: str) -> None:
        self.errors.append(f"{path}: {msg}")

    def value(self, path: str, ftype: str, v) -> None:
        ftype = _WRAPPERS.get(ftype, ftype)
        if ftype.startswith("map<"):
            key_type, value_type = ftype[4:-1].split(",", 1)
            if not isinstance(v, dict):
                return self.err(path, f"expected an object (map), got {type(v).__name__}")
            for k, item in v.items():
                self.value(f"{path}.{k}", value_type, item)
        elif ftype in self.messages:
            self.message(path, ftype, v)
        elif ftype in self.enums:
            if not isinstance(v, str):
                self.err(path, f"expected a {ftype} name, got {v!r}")
            elif v not in self.enums[ftype]:
                self.err(path, f"{v!r} is not a value of enum {ftype}")
        elif ftype == "string":
            if not isinstance(v, str):
                self.err(path, f"expected a string, got {type(v).__name__}")
        elif ftype == "bool":
            if not isinstance(v, bool):
                self.err(path, f"expected true/false, got {v!r}")
        elif ftype == "bytes":
            if not isinstance(v, str):
                return self.err(path, "expected base64 text")
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                self.err(path, f"not base64: {v[:40]!r}")
        elif ftype in _INT_RANGES:
            lo, hi = _INT_RANGES[ftype]
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                self.err(path, f"expected a {ftype} number, got {v!r}")
        elif ftype in _LONG_RANGES:
            lo, hi = _LONG_RANGES[ftype]
            if not isinstance(v, str) or not _DECIMAL.match(v) or not lo <= int(v) <= hi:
                self.err(path, f"expected a {ftype} as a JSON string of digits, got {v!r}")
        elif ftype == "json_int":      # tetrahost extension only
            if not isinstance(v, int) or isinstance(v, bool):
                self.err(path, f"expected an integer, got {v!r}")
        elif ftype in ("double", "float"):
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                self.err(path, f"expected a number, got {v!r}")
        elif ftype == "google.protobuf.Timestamp":
            if not isinstance(v, str) or not _TIMESTAMP.match(v):
                self.err(path, f"expected an RFC 3339 UTC timestamp, got {v!r}")
        else:
            self.err(path, f"type {ftype} is not in the schema")

    def message(self, path: str, name: str, obj) -> None:
        if not isinstance(obj, dict):
            return self.err(path, f"expected a {name} object, got {type(obj).__name__}")
        fields = self.messages[name]
        for key, v in obj.items():
            sub = f"{path}.{key}" if path else key
            if key not in fields:
                self.err(sub, f"unknown field of {name}")
                continue
            ftype, label = fields[key]
            if label == "repeated":
                if not isinstance(v, list):
                    self.err(sub, f"expected a list of {ftype}")
                    continue
                for i, item in enumerate(v):
                    self.value(f"{sub}[{i}]", ftype, item)
            else:
                self.value(sub, ftype, v)
        members = ONEOFS.get(name)
        if name == "KprobeArgument":
            members = tuple(f for f in fields if f not in _ARG_ONEOF_EXCEPT)
        if members:
            present = [k for k in obj if k in members]
            if len(present) > 1:
                self.err(path or "(event)", f"oneof of {name} has several members: {', '.join(present)}")
            if name == ROOT and not present:
                self.err("(event)", "no event kind (process_exec, process_kprobe, ...)")


def validate_event(event, *, allow_host_fields: bool = False) -> list[str]:
    c = _Checker()
    if isinstance(event, dict) and HOST_KEY in event:
        event = dict(event)
        host = event.pop(HOST_KEY)
        if allow_host_fields:
            c.message(HOST_KEY, "tetrahost.Host", host)
        else:
            c.err(HOST_KEY, "host fields present (export.host_fields is off)")
    c.message("", ROOT, event)
    return c.errors


def validate_line(line: str | bytes, *, allow_host_fields: bool = False) -> list[str]:
    try:
        event = json.loads(line)
    except ValueError as exc:
        return [f"(line): not JSON: {exc}"]
    return validate_event(event, allow_host_fields=allow_host_fields)
