"""spec.uprobes: what the front end accepts (one hook per symbol or offset)
and what it rejects, with exact file:line: field.path: message."""

import pytest

from tetrahost.policy import load_text

from policytest_helpers import errors_of, policy_text

GOOD = """
uprobes:
- path: "/usr/local/bin/app"
  symbols:
  - "th_secret_check"
  - "_ZN3app5checkEv"
  args:
  - index: 0
    type: int
  - index: 1
    type: string
  - index: 2
    type: char_buf
    sizeArgIndex: 4
  - index: 3
    type: uint64
  selectors:
  - matchPIDs:
    - operator: NotIn
      values: [1]
    matchBinaries:
    - operator: In
      values: ["/usr/local/bin/app"]
    matchArgs:
    - index: 1
      operator: Equal
      values: ["killme"]
    matchActions:
    - action: Sigkill
  - matchArgs:
    - index: 0
      operator: GreaterThan
      values: ["100"]
    matchActions:
    - action: Signal
      argSig: 10
  message: "secret checked"
  tags: ["app"]
"""


def hooks_of(body: str):
    result = load_text(policy_text(body), file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    (policy,) = result.policies
    return policy.hooks


def test_one_hook_per_symbol_sharing_args_and_selectors():
    first, second = hooks_of(GOOD)
    assert [(h.kind, h.path, h.symbol, h.offset, h.name) for h in (first, second)] == [
        ("uprobe", "/usr/local/bin/app", "th_secret_check", 0, "th_secret_check"),
        ("uprobe", "/usr/local/bin/app", "_ZN3app5checkEv", 0, "_ZN3app5checkEv")]
    # each hook names the line of its own symbol
    assert (first.source.line, first.source.path) == (9, "spec.uprobes[0].symbols[0]")
    assert (second.source.line, second.source.path) == (10, "spec.uprobes[0].symbols[1]")
    assert first.args == second.args and first.selectors == second.selectors
    assert [a.base_type for a in first.args] == ["int32", "string", "char_buf", "uint64"]
    assert [a.action for s in first.selectors for a in s.match_actions] == ["Sigkill", "Signal"]
    assert first.selectors[1].match_actions[0].signal == 10
    assert (first.message, first.tags) == ("secret checked", ("app",))
    assert first.describe() == "uprobe /usr/local/bin/app:th_secret_check"


def test_file_offsets():
    (hook,) = hooks_of("""
        uprobes:
        - path: /usr/bin/app
          offsets: [0x1139]
        """)
    assert (hook.symbol, hook.offset, hook.name) == ("", 0x1139, "0x1139")
    assert hook.describe() == "uprobe /usr/bin/app:0x1139"


def test_no_selectors_posts_every_call():
    (hook,) = hooks_of("""
        uprobes:
        - path: /bin/bash
          symbols: [readline]
        """)
    assert hook.selectors == () and hook.args == ()


@pytest.mark.parametrize("body, expected", [
    ("""
     uprobes:
     - symbols: [readline]
     """, ["p.yaml:7: spec.uprobes[0].path: required field is missing"]),
    ("""
     uprobes:
     - path: bin/bash
       symbols: [readline]
     """, ['p.yaml:7: spec.uprobes[0].path: "bin/bash" is not an absolute path (the binary or library '
           'to probe, e.g. "/usr/bin/bash")']),
    ("""
     uprobes:
     - path: /bin/bash
     """, ["p.yaml:7: spec.uprobes[0].symbols: a uprobe needs symbols (function names in the binary) "
           "or offsets (file offsets into it)"]),
    ("""
     uprobes:
     - path: /bin/bash
       symbols: [readline]
       offsets: [16]
     """, ["p.yaml:9: spec.uprobes[0].offsets: symbols and offsets together are not supported by "
           "tetrahost (give symbols, or file offsets into the binary)"]),
    ("""
     uprobes:
     - path: /bin/bash
       symbols: ["read line", readline, readline]
     """, ['p.yaml:8: spec.uprobes[0].symbols[0]: "read line" is not an ELF symbol name',
           "p.yaml:8: spec.uprobes[0].symbols[2]: readline is already listed at spec.uprobes[0].symbols[1]"]),
    ("""
     uprobes:
     - path: /bin/bash
       offsets: [-1]
     """, ["p.yaml:8: spec.uprobes[0].offsets[0]: expected a file offset (an integer from 0 to "
           "9223372036854775807), got the number -1"]),
    ("""
     uprobes:
     - path: /bin/bash
       symbol: readline
     """, ["p.yaml:8: spec.uprobes[0].symbol: `symbol` is the field of Tetragon's first uprobe version; "
           "write `symbols: [NAME]`"]),
    ("""
     uprobes:
     - path: /bin/bash
       symbols: [readline]
       refCtrOffsets: [8]
     """, ["p.yaml:9: spec.uprobes[0].refCtrOffsets: reference counter offsets (refCtrOffsets, USDT "
           "semaphores) are not supported by tetrahost yet"]),
    ("""
     uprobes:
     - path: /bin/bash
       symbols: [readline]
       args:
       - index: 0
         type: file
     """, ['p.yaml:11: spec.uprobes[0].args[0].type: argument type "file" is a kernel object; a uprobe '
           "reads a user-space call's arguments: integers, string or char_buf"]),
    ("""
     uprobes:
     - path: /bin/bash
       symbols: [readline]
       selectors:
       - matchActions:
         - action: Override
           argError: -1
     """, ["p.yaml:11: spec.uprobes[0].selectors[0].matchActions[0].action: Override on a uprobe "
           "(setting registers, argRegs) is not supported by tetrahost; Sigkill, Signal, Post and NoPost are"]),
    ("""
     uprobes:
     - path: /bin/bash
       symbols: [readline]
       selectors:
       - matchReturnArgs:
         - index: 0
           operator: Equal
           values: ["0"]
     """, ["p.yaml:10: spec.uprobes[0].selectors[0].matchReturnArgs: matchReturnArgs needs a kprobe "
           "with return: true",
           "p.yaml:11: spec.uprobes[0].selectors[0].matchReturnArgs[0]: matchReturnArgs needs returnArg "
           "(the type of the return value)"]),
    ("""
     uprobes:
     - path: /bin/bash
       symbols: [readline]
       args:
       - index: 0
         type: int
       selectors:
       - matchArgs:
         - index: 1
           operator: Equal
           values: ["x"]
     """, ["p.yaml:14: spec.uprobes[0].selectors[0].matchArgs[0].index: index 1 does not refer to a "
           "declared argument (declared indexes: 0)"]),
])
def test_rejected_with_file_line_and_field(body, expected):
    assert errors_of(body) == expected


def test_a_bad_entry_does_not_hide_the_others():
    errors = errors_of("""
        uprobes:
        - path: /bin/bash
          symbols: [readline]
          return: true
        - path: /bin/sh
        """)
    assert errors == [
        "p.yaml:9: spec.uprobes[0].return: return uprobes (uretprobes) are not supported by tetrahost yet",
        "p.yaml:10: spec.uprobes[1].symbols: a uprobe needs symbols (function names in the binary) "
        "or offsets (file offsets into it)"]
