#!/usr/bin/env python3
"""Generate tetrahost/export/tetragon_schema.json from Tetragon's API reference.

Input: Tetragon's gRPC API reference (docs/content/en/docs/reference/grpc-api.md
of cilium/tetragon), which Tetragon generates with protoc-gen-doc from its
api/v1/tetragon/*.proto: one "### Name" section per message (a Field | Type |
Label table) or enum (a Name | Number table).  A trimmed copy is vendored in
scripts/tetragon-api/; for the next Tetragon version:

    python3 scripts/gen_tetragon_schema.py path/to/grpc-api.md --commit <sha>

Output: every message and enum reachable from tetragon.GetEventsResponse, as
{"messages": {Name: {field: [type, "repeated"|""]}}, "enums": {Name: [values]}},
which tetrahost.export.conformance validates exported lines against.
Map fields (protoc-gen-doc shows them as repeated *Entry messages) become
"map<string,V>" types.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO / "scripts" / "tetragon-api" / "grpc-api-0059fa66.md"
DEFAULT_COMMIT = "0059fa662dfb6cc7feea6612d80d04318ff71ded"
OUTPUT = REPO / "tetrahost" / "export" / "tetragon_schema.json"
ROOT = "GetEventsResponse"

_HEADING = re.compile(r"^### (\S+)\s*$")
_ROW = re.compile(r"^\|(.*)\|\s*$")
_TYPE = re.compile(r"^\[([\w.]+)\]\(#[^)]*\)$")


def parse_reference(text: str, where: str) -> tuple[dict, dict]:
    """(messages, enums) of every section of the reference."""
    messages: dict[str, dict] = {}
    enums: dict[str, list] = {}
    name = kind = None
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _HEADING.match(line)
        if m:
            name, kind = m.group(1), None
            continue
        if line.startswith("## "):
            name = kind = None
            continue
        row = _ROW.match(line)
        if not row or name is None:
            continue
        cells = [c.strip() for c in row.group(1).split("|")]
        if cells[0] in ("Field", "Name", "Method Name"):
            kind = {"Field": "message", "Name": "enum"}.get(cells[0])
            if kind == "message":
                messages.setdefault(name, {})
            elif kind == "enum":
                enums.setdefault(name, [])
            continue
        if set(cells[0]) <= {"-"} or kind is None:
            continue
        if kind == "message":
            t = _TYPE.match(cells[1])
            if not t:
                raise SystemExit(f"{where}:{lineno}: {name}.{cells[0]}: cannot read the type {cells[1]!r}")
            messages[name][cells[0]] = [t.group(1), cells[2]]
        else:
            enums[name].append(cells[0])
    return messages, enums


def reachable(messages: dict, enums: dict, root: str, where: str) -> tuple[dict, dict]:
    """The messages and enums an event can contain, maps folded into map<string,V>."""
    out_m: dict[str, dict] = {}
    out_e: dict[str, list] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if name in out_m:
            continue
        if name not in messages:
            raise SystemExit(f"{where}: message {name} is referenced but not described")
        fields = {}
        for field, (ftype, label) in messages[name].items():
            entry = messages.get(ftype)
            if ftype.endswith("Entry") and label == "repeated" and entry and set(entry) == {"key", "value"}:
                ftype, label = f"map<{entry['key'][0]},{entry['value'][0]}>", ""
                value_type = entry["value"][0]
                if value_type in messages:
                    todo.append(value_type)
            elif ftype in enums:
                out_e[ftype] = enums[ftype]
            elif ftype in messages:
                todo.append(ftype)
            fields[field] = [ftype, label]
        out_m[name] = fields
    return dict(sorted(out_m.items())), dict(sorted(out_e.items()))


def generate(source: pathlib.Path, commit: str) -> dict:
    messages, enums = parse_reference(source.read_text(), str(source))
    msgs, ens = reachable(messages, enums, ROOT, str(source))
    return {"tetragon": {"repository": "cilium/tetragon", "commit": commit,
                         "file": "docs/content/en/docs/reference/grpc-api.md", "root": f"tetragon.{ROOT}"},
            "generated_by": "scripts/gen_tetragon_schema.py",
            "messages": msgs, "enums": ens}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reference", nargs="?", type=pathlib.Path, default=DEFAULT_INPUT)
    ap.add_argument("--commit", default=DEFAULT_COMMIT, help="the Tetragon commit the reference is from")
    ap.add_argument("-o", "--output", type=pathlib.Path, default=OUTPUT)
    ap.add_argument("--check", action="store_true", help="fail if the output file is not up to date")
    args = ap.parse_args(argv)
    text = json.dumps(generate(args.reference, args.commit), indent=1, sort_keys=False) + "\n"
    if args.check:
        if not args.output.exists() or args.output.read_text() != text:
            print(f"{args.output} is not what {args.reference} generates: run {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
