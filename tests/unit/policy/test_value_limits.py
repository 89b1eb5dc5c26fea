"""How many values a matchArgs / matchBinaries entry may hold: strings and
paths go to the hook's BPF string-set maps (no limit per entry, the maps'
capacity per hook), integers and network values are inline in the selector.
Every limit is the kernel side's constant from csrc/events.h."""

from policytest_helpers import errors_of, policy_text

from tetrahost.bpf.native import lib
from tetrahost.policy import limits, load_text
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy.compile import compile_hook


def file_prefix_hook(prefixes: list[str], binaries: list[str] = ()) -> str:
    values = "\n".join(f"          - {p}" for p in prefixes)
    body = f"""
kprobes:
- call: security_file_open
  syscall: false
  args:
  - index: 0
    type: file
  selectors:
  - matchArgs:
    - index: 0
      operator: Prefix
      values:
{values}
"""
    if binaries:
        body += "    matchBinaries:\n    - operator: Prefix\n      values:\n"
        body += "\n".join(f"      - {b}" for b in binaries) + "\n"
    return body


def test_limits_are_the_kernel_constants():
    assert limits.MAX_STRING_SET_ENTRIES == lib.TH_STR_SET_ENTRIES
    assert limits.MAX_MATCHARG_VALUES == lib.TH_MAX_INT_VALUES
    assert limits.MAX_SELECTORS_PER_HOOK == lib.TH_MAX_SELECTORS
    assert limits.MAX_PID_VALUES == lib.TH_MAX_PID_VALUES


def test_fourteen_file_prefixes_are_accepted_and_compiled():
    prefixes = [f"/srv/data{i}/" for i in range(14)]
    result = load_text(policy_text(file_prefix_hook(prefixes)), file="p.yaml")
    assert result.errors == []
    hook = result.policies[0].hooks[0]
    compiled = compile_hook(hook, 1, HostNamespaces.unknown())
    assert sorted(v for _, v in compiled.str_prefix) == sorted(p.encode() for p in prefixes)
    assert compiled.config.selectors[0].args[0].op == lib.TH_MATCH_PREFIX


def test_string_values_are_bounded_per_hook_by_the_map_capacity():
    cap = lib.TH_STR_SET_ENTRIES
    # exactly the capacity, split between matchArgs and matchBinaries: accepted
    at_cap = file_prefix_hook([f"/a{i}/" for i in range(cap - 10)], [f"/b{i}/" for i in range(10)])
    assert errors_of(at_cap) == []
    over = file_prefix_hook([f"/a{i}/" for i in range(cap - 10)], [f"/b{i}/" for i in range(11)])
    assert errors_of(over) == [
        f"p.yaml:12: spec.kprobes[0].selectors: {cap + 1} Prefix string values in this hook's "
        f"selectors (matchArgs and matchBinaries together), the limit is {cap} per hook"]


def test_integer_values_are_inline_and_limited():
    n = lib.TH_MAX_INT_VALUES
    body = """
kprobes:
- call: sys_kill
  syscall: true
  args:
  - index: 1
    type: int
  selectors:
  - matchArgs:
    - index: 1
      operator: Equal
      values: [{values}]
"""
    assert errors_of(body.format(values=", ".join(str(i) for i in range(n)))) == []
    assert errors_of(body.format(values=", ".join(str(i) for i in range(n + 1)))) == [
        f"p.yaml:16: spec.kprobes[0].selectors[0].matchArgs[0].values: {n + 1} values, the limit is "
        f"{n} for a int argument"]
