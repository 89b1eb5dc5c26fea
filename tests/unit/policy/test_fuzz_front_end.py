"""Fuzz the policy front end with mutated policy text (fixed seed, a few seconds).

Mutations work on the text, not on parsed YAML, so they reach the reader and
the tree builder too: deleted and duplicated lines, deep nesting, anchors and
aliases, huge and odd numbers, NUL bytes, other YAML types and tags, stray
characters. Whatever comes out, load_text returns a result (policies or
`file:line: field` errors) and never raises; an accepted policy compiles or
raises CompileError; memory stays bounded.
"""

import random
import re
import resource
import time
from pathlib import Path

from policytest_helpers import CONFORMANCE

from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy import PolicyError, load_text
from tetrahost.policy.compile import CompileError, KernelUnreadable, compile_hook
from tetrahost.policy.errors import MAX_MESSAGE

SEED = 20240611
BUDGET_SECONDS = 4.0
HERE = Path(__file__).parent

BUILTIN = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: fuzz-seed
spec:
  options:
  - name: policy-mode
    value: enforce
  kprobes:
  - call: sys_kill
    syscall: true
    return: true
    args:
    - index: 0
      type: int
    - index: 1
      type: uint64
    returnArg:
      index: 0
      type: int
    selectors:
    - matchPIDs:
      - operator: NotIn
        values: [1, 2]
      matchArgs:
      - index: 1
        operator: Mask
        values: ["0xff", "18446744073709551615"]
      matchBinaries:
      - operator: In
        values: ["/usr/bin/kill", "/bin/sh"]
      matchActions:
      - action: Post
        rateLimit: 1m
        rateLimitScope: process
      - action: Signal
        argSig: 9
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    raw: true
    args:
    - index: 1
      type: int64
    selectors:
    - matchNamespaces:
      - namespace: Pid
        operator: In
        values: [host_ns, "4026531836"]
"""

NASTY_VALUES = (
    "99999999999999999999999999", "-9223372036854775809", "18446744073709551616", "0x" + "f" * 40,
    "1:2:3:4:5:6", "1e999", ".nan", "-0", "0o777", "0b" + "1" * 70, "9" * 200, "'\\0'", '"a\\0b"',
    '"\\0"', "~", "[]", "{}", "[[[[]]]]", "!!binary aGVsbG8=", "2024-02-31", "!foo bar", "*undefined",
    "&x 1", "<<: {a: 1}", '"' + "x" * 5000 + '"', "²", "١٢٣", "true", "''", '"\\x00"', "!!int 1_000",
    "? [a]", "|\n  block", "- - - -",
)


def corpus() -> list[str]:
    texts = [BUILTIN]
    if CONFORMANCE.is_dir():   # beside the clone in CI; the builtin seed is enough without it
        texts += [p.read_text() for p in sorted((CONFORMANCE / "seed-policies").glob("*.yaml"))]
        texts += [p.read_text() for p in sorted((CONFORMANCE / "tetragon-examples").glob("*.yaml"))[:20]]
    texts += [p.read_text() for p in sorted((HERE / "hostile").glob("*.yaml"))]
    return texts


def mutate(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    for _ in range(rng.randint(1, 4)):
        if not lines:
            lines = [""]
        i = rng.randrange(len(lines))
        line = lines[i]
        choice = rng.randrange(11)
        if choice == 0:
            del lines[i]
        elif choice == 1:
            lines[i:i] = [line] * rng.randint(1, 50)
        elif choice == 2:      # a value replaced by something nasty
            nasty = rng.choice(NASTY_VALUES)
            lines[i] = re.sub(r":\s.*$", lambda _: ": " + nasty, line) if ":" in line else line + nasty
        elif choice == 3:      # a list item replaced
            nasty = rng.choice(NASTY_VALUES)
            lines[i] = re.sub(r"-\s.*$", lambda _: "- " + nasty, line)
        elif choice == 4:      # deep nesting, in flow or block style
            depth = rng.choice((10, 63, 64, 65, 300, 3000))
            lines[i] = line + (" " + "[" * depth + "]" * depth if rng.random() < 0.5 else "")
            if rng.random() < 0.5:
                lines[i + 1:i + 1] = ["  " * d + "k:" for d in range(depth % 200)]
        elif choice == 5:      # anchors and aliases
            anchor = f"&a{rng.randrange(3)}"
            alias = f"*a{rng.randrange(3)}"
            lines[i] = line.replace(": ", f": {anchor} ", 1) if rng.random() < 0.5 else \
                re.sub(r":\s.*$", f": {alias}", line)
            if rng.random() < 0.3:
                lines[i:i] = ["x0: &a0 [z, z, z, z, z, z, z, z]",
                              "x1: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]",
                              "x2: &a2 [*a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1]"]
        elif choice == 6:      # a stray character, maybe one YAML forbids
            pos = rng.randrange(len(line) + 1)
            lines[i] = line[:pos] + rng.choice(":-[]{}&*!|>'\"%@`#,?\t\x00\x07\ufeff\u2028é") + line[pos:]
        elif choice == 7:      # cut the line short
            lines[i] = line[:rng.randrange(len(line) + 1)]
        elif choice == 8:      # indent off by one
            lines[i] = (" " + line) if rng.random() < 0.5 else line[1:]
        elif choice == 9:      # a number made huge or negative
            lines[i] = re.sub(r"\b\d+\b", rng.choice(("-1", "4294967296", "9" * 30, "0")), line)
        else:                  # a whole document repeated
            return text + "\n---\n" + text
    return "\n".join(lines)


def test_mutated_policies_never_raise():
    rng = random.Random(SEED)
    texts = corpus()
    host_ns = HostNamespaces.unknown()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    checked = accepted = compiled = 0
    while time.monotonic() - started < BUDGET_SECONDS:
        text = mutate(rng, rng.choice(texts))
        result = load_text(text, "fuzz.yaml")      # raising anything fails the test with the input
        checked += 1
        for error in result.errors:
            assert isinstance(error, PolicyError) and error.file == "fuzz.yaml", (text, error)
            assert error.line >= 0 and len(error.message) <= MAX_MESSAGE + 1, (text, error)
            assert "internal error" not in error.message, (text, error.render())
        assert bool(result.policies) != bool(result.errors) or not result.policies, text
        for policy in result.policies:
            accepted += 1
            for i, hook in enumerate(policy.hooks):
                try:
                    compile_hook(hook, i, host_ns, fields=[] if hook.kind == "tracepoint" else None)
                    compiled += 1
                except (CompileError, KernelUnreadable):
                    pass
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert checked > 200 and accepted > 10 and compiled > 10, (checked, accepted, compiled)
    assert grown_kib < 200 * 1024, grown_kib
