"""tetrahost/constants.py is csrc/events.h's enums, for code that must not
need the compiled extension (the policy front end): generated from the
header, never edited, and equal to what the cffi binding reads."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from tetrahost import constants

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "csrc"))
import gen_constants  # noqa: E402

sys.path.pop(0)


def test_module_is_generated_from_the_header():
    wanted = gen_constants.render((ROOT / "csrc" / "events.h").read_text())
    assert (ROOT / "tetrahost" / "constants.py").read_text() == wanted, \
        "tetrahost/constants.py is stale: run `make build` (csrc/gen_constants.py)"
    rc = subprocess.run([sys.executable, str(ROOT / "csrc" / "gen_constants.py"), "--check"]).returncode
    assert rc == 0


def test_every_value_matches_the_cffi_binding():
    native = pytest.importorskip("tetrahost.bpf.native")
    names = [n for n in dir(constants) if n.startswith("TH_")]
    assert len(names) > 100      # every enum of the header, not a few
    wrong = {n: (getattr(constants, n), getattr(native.lib, n)) for n in names
             if getattr(constants, n) != getattr(native.lib, n)}
    assert not wrong
    # and nothing the binding has is missing here
    missing = [n for n in dir(native.lib) if n.startswith("TH_") and not hasattr(constants, n)]
    assert not missing


def test_an_expression_in_an_enum_is_refused_not_dropped():
    header = "/* CDEF-BEGIN */\nenum th_x {\n\tTH_A = 4,\n\tTH_B = TH_A * 2,\n};\n/* CDEF-END */\n"
    with pytest.raises(SystemExit, match="only `NAME = number` entries"):
        gen_constants.render(header)


def test_comments_and_hex_values_are_read():
    header = ("/* CDEF-BEGIN */\nenum th_x {\n\tTH_A = 0x40, /* one, = 3 */\n\tTH_B = 7 /* last */\n};\n"
              "/* enum th_not { TH_C = 1 }; */\n/* CDEF-END */\n")
    out = gen_constants.render(header)
    ns: dict = {}
    exec(out, ns)
    assert (ns["TH_A"], ns["TH_B"]) == (0x40, 7) and "TH_C" not in ns


def test_array_sizes_are_the_enums_not_copies_of_them():
    """An array sized by a shared limit names it (`ns[TH_NS_COUNT]`): a literal
    beside a comment naming the enum is a second definition that can drift."""
    import re
    header = (pathlib.Path(__file__).resolve().parents[2] / "csrc" / "events.h").read_text()
    copies = [line.strip() for line in header.splitlines()
              if re.search(r"\[\d+\];\s*/\*\s*\(?TH_[A-Z0-9_]+", line)]
    assert not copies, "\n".join(copies)
    assert "ns[TH_NS_COUNT]" in header and "selectors[TH_MAX_SELECTORS]" in header
