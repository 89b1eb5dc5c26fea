"""Hostile policy files: each is refused with one precise `file:line: field: message`
error, never an exception, a hang or unbounded memory (see docs/policies.md,
"Limits on policy files")."""

import os
import resource
import socket
import stat
import time
from pathlib import Path

import pytest

from tetrahost.policy import check_file, load_path, load_text
from tetrahost.policy import limits
from tetrahost.policy.load import read_policy_file
from tetrahost.policy.errors import PolicyError

HOSTILE = Path(__file__).parent / "hostile"

EXPECTED = {
    "self-alias.yaml": ["1: a[0]: alias *a is used inside the node it names (a recursive alias): refused"],
    "nesting-600.yaml": ["1: spec" + "[0]" * 63 + ": nested more than 64 levels deep: refused"],
    "nesting-map-100.yaml": ["64: " + ".".join(["k"] * 63) + ": nested more than 64 levels deep: refused"],
    "billion-laughs.yaml": ["6: e[3]: more than 50000 YAML nodes (aliases counted as what they repeat): refused"],
    "rate-limit-overflow.yaml": ['12: spec.kprobes[0].selectors[0].matchActions[0].rateLimit: '
                                 '"99999999999999999999h" is out of range (at most 31536000 seconds, 8760h)'],
    "huge-integer.yaml": ["17: spec.kprobes[0].selectors[0].matchArgs[0].values[0]: a number of 5000 "
                          "characters is out of range for every field (at most 80 characters)"],
    "signal-out-of-range.yaml": ["12: spec.kprobes[0].selectors[0].matchActions[0].argSig: "
                                 "18446744073709551617 is out of range (must be between 1 and 64)"],
    "arg-index-out-of-range.yaml": ["10: spec.kprobes[0].args[0].index: 4294967296 is out of range "
                                    "(must be between 0 and 4)"],
    "value-out-of-range.yaml": ["17: spec.kprobes[0].selectors[0].matchArgs[0].values[0]: 18446744073709551616 "
                                "does not fit a uint64 argument (range 0 to 18446744073709551615)"],
    "unicode-digit-pid.yaml": ['13: spec.kprobes[0].selectors[0].matchPIDs[0].values[0]: "²" is not a PID '
                               "(expected a number from 0 to 4294967295)"],
    "nul-in-name.yaml": ["4: metadata.name: a NUL byte (\\0) is only allowed as the last character of a string"],
    "empty-call.yaml": ["7: spec.kprobes[0].call: must not be empty"],
    "empty-action.yaml": ["11: spec.kprobes[0].selectors[0].matchActions[0].action: must not be empty"],
    "unknown-tag.yaml": ['7: spec.kprobes[0].call: unknown YAML tag "!python/name:os.system"'],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_file_is_refused_precisely(name):
    started = time.monotonic()
    result = load_path(HOSTILE / name, display_name=name)
    assert [e.render() for e in result.errors] == [f"{name}:{line}" for line in EXPECTED[name]]
    assert not result.policies
    assert time.monotonic() - started < 2


def test_every_hostile_file_has_an_expectation():
    assert sorted(p.name for p in HOSTILE.glob("*.yaml")) == sorted([*EXPECTED, "bad-timestamp.yaml"])


def test_an_impossible_date_is_kept_as_text():
    # 2024-02-31 looks like a YAML timestamp; constructing it used to raise ValueError
    result = load_path(HOSTILE / "bad-timestamp.yaml")
    assert result.ok, result.errors
    assert result.policies[0].hooks[0].message == "2024-02-31"


def test_alias_bomb_stays_small_and_fast():
    # 10^9 strings if expanded: refused while counting, before memory grows
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    for _ in range(5):
        load_path(HOSTILE / "billion-laughs.yaml")
    assert time.monotonic() - started < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024   # KiB


def test_expansion_below_the_limit_is_accepted():
    text = (HOSTILE / "billion-laughs.yaml").read_text().split("\ne:")[0]   # 10^4 strings
    assert "YAML nodes" not in " ".join(e.message for e in load_text(text, "x.yaml").errors)


@pytest.fixture
def shadow(tmp_path):
    secret = "$6$Sa1tSa1t$" + "Q" * 86
    path = tmp_path / "shadow"
    path.write_text(f"root:{secret}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    link = tmp_path / "policy.yaml"
    link.symlink_to(path)
    return link, secret


def test_a_link_to_a_shadow_file_quotes_nothing_of_it(shadow):
    link, secret = shadow
    result = load_path(link)
    assert [e.render() for e in result.errors] == [
        f"{link}:1: not a TracingPolicy document (it has none of the fields apiVersion, kind, metadata, spec)"]


def test_messages_quote_at_most_64_characters_of_a_value():
    long_name = "x" * 500
    text = ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n"
            f"  kprobes:\n  - call: sys_kill\n    syscall: true\n    selectors:\n    - matchActions:\n"
            f"      - action: {long_name}\n")
    [error] = load_text(text, "p.yaml").errors
    assert error.render().startswith(f'p.yaml:11: spec.kprobes[0].selectors[0].matchActions[0].action: '
                                     f'unknown action "{"x" * 64}…" (expected one of:')
    assert "x" * 65 not in error.render()


def test_a_yaml_error_on_secret_content_does_not_echo_it(tmp_path):
    path = tmp_path / "key.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nMIIEv: QIBADANBgkqhkiG9w0B: AQEFAASC\n  - x\n")
    [error] = load_path(path).errors
    assert error.code == "yaml-syntax" and "MIIE" not in error.render() and "BEGIN" not in error.render()


# ---- what the reader refuses: the file itself -------------------------------------------------

def _refused(path, display=None) -> str:
    [error] = load_path(path, display_name=display).errors
    return error.render()


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)          # no writer: opening it for reading without O_NONBLOCK would hang
    started = time.monotonic()
    assert _refused(fifo) == (f"{fifo}: not a regular file: it is a FIFO (named pipe); only regular "
                              "files are read as policies")
    assert time.monotonic() - started < 1


def test_link_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    assert _refused(link) == (f"{link}: not a regular file (through a symbolic link): it is a character "
                              "device; only regular files are read as policies")


def test_link_to_proc_self_mem_is_an_error(tmp_path):
    link = tmp_path / "mem.yaml"
    link.symlink_to("/proc/self/mem")
    assert _refused(link) == f"{link}: cannot read the file: Input/output error"


def test_directory_socket_and_dangling_link(tmp_path):
    assert _refused(tmp_path) == (f"{tmp_path}: not a regular file: it is a directory; only regular "
                                  "files are read as policies")
    sock_path = tmp_path / "s.yaml"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        assert _refused(sock_path) == (f"{sock_path}: not a regular file: it is a socket; only regular "
                                       "files are read as policies")
    dangling = tmp_path / "gone.yaml"
    dangling.symlink_to(tmp_path / "nothing-here")
    assert _refused(dangling) == (f"{dangling}: cannot read the file: it is a symbolic link to a file "
                                  "that does not exist")


def test_too_large_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as f:
        f.truncate(limits.MAX_POLICY_FILE_BYTES + 1)      # sparse: nothing to read anyway
    assert _refused(path) == (f"{path}: the file is too large ({limits.MAX_POLICY_FILE_BYTES + 1} bytes; "
                              f"the limit is {limits.MAX_POLICY_FILE_BYTES} bytes)")
    path.write_bytes(b"#" * limits.MAX_POLICY_FILE_BYTES)  # exactly the limit: read
    assert "too large" not in _refused(path)


def test_binary_file_says_where_not_what(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"a: 1\nsecret\xff\xfe")
    assert _refused(path) == f"{path}:2: the file is not UTF-8 text (invalid byte at offset 11)"


def test_read_policy_file_returns_text_or_raises_policy_error(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("a: b\n")
    assert read_policy_file(path) == "a: b\n"
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError) as info:
        read_policy_file(fifo, display_name="shown.yaml")
    assert info.value.file == "shown.yaml" and info.value.code == "not-regular-file"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_an_unexpected_exception_rejects_the_file_with_its_name(monkeypatch, tmp_path):
    import tetrahost.policy.load as load
    path = tmp_path / "p.yaml"
    path.write_text((HOSTILE / "empty-call.yaml").read_text())

    def broken(*args, **kwargs):
        raise KeyError("boom")
    monkeypatch.setattr(load, "validate_spec", broken)
    assert [e.render() for e in check_file(path).errors] == [f"{path}: internal error: KeyError: 'boom'"]


# ---- the command lines ------------------------------------------------------------------------

def test_policy_check_goes_on_after_a_bad_file_and_fails(tmp_path, capsys, monkeypatch):
    from tetrahost.cli import policy_cmd
    import tetrahost.policy.compile_selectors as compile_selectors
    good = tmp_path / "good.yaml"
    good.write_text((HOSTILE / "empty-call.yaml").read_text().replace('call: ""', "call: sys_kill"))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    paths = [str(HOSTILE / "self-alias.yaml"), str(fifo), str(good)]
    assert policy_cmd.check_paths(paths, no_probe=True) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"FAIL {paths[0]}: 1 error"
    assert out[2:4] == [f"FAIL {fifo}: 1 error", f"  {fifo}: not a regular file: it is a FIFO (named pipe); "
                        "only regular files are read as policies"]
    assert out[4].startswith("OK hostile: 1 hook") and out[-1] == "1 file(s) OK, 2 rejected"

    # an exception in the kernel-side compiler: that hook's file is named, no traceback, exit 1
    monkeypatch.setattr(compile_selectors, "_compile_action", lambda *a: 1 / 0)
    good.write_text(good.read_text() + "    selectors:\n    - matchActions:\n      - action: Post\n")
    assert policy_cmd.check_paths([str(good)], no_probe=True) == 1
    captured = capsys.readouterr()
    assert (f"    kernel side: REJECTED: {good}: internal error: ZeroDivisionError: division by zero"
            in captured.out.splitlines())
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "large"])
def test_tetra_tracingpolicy_add_refuses_before_connecting(tmp_path, target):
    import io
    from tetrahost.cli.tetra import main
    path = tmp_path / "p.yaml"
    if target == "fifo":
        os.mkfifo(path)
        expected = "not a regular file: it is a FIFO (named pipe)"
    elif target == "large":
        path.write_text("# padding\n" * (limits.MAX_POLICY_FILE_BYTES // 10 + 1))
        expected = f"the file is too large ({path.stat().st_size} bytes; the limit is {limits.MAX_POLICY_FILE_BYTES} bytes)"
    else:
        path.symlink_to(target)
        expected = "not a regular file (through a symbolic link): it is a character device"
    out, err = io.StringIO(), io.StringIO()
    # the socket does not exist: reaching the agent would give another message
    code = main(["tracingpolicy", "add", str(path), "--socket", str(tmp_path / "no-agent.sock")],
                stdout=out, stderr=err)
    assert code == 1
    assert err.getvalue().splitlines() == [f"FAIL {path}: 1 error", f"  {path}: {expected}"
                                           + ("; only regular files are read as policies"
                                              if target != "large" else "")]


def test_uint64_values_compile_as_their_bit_pattern():
    # validation admits uint64 values up to 2**64-1; the kernel's int64_t holds them
    # as their bit pattern (this raised OverflowError in the compiler)
    from tetrahost.events.namespaces import HostNamespaces
    from tetrahost.policy.compile import compile_hook
    text = (HOSTILE / "value-out-of-range.yaml").read_text().replace(
        '- "18446744073709551616"', '- "18446744073709551615"\n        - "0x8000000000000000"')
    [policy] = load_text(text, "u64.yaml").policies
    compiled = compile_hook(policy.hooks[0], 0, HostNamespaces.unknown())
    matcher = compiled.config.selectors[0].args[0]
    assert (matcher.nvalues, matcher.values[0], matcher.values[1]) == (2, -1, -(1 << 63))
    text = text.replace("operator: Equal", "operator: GreaterThan")
    assert [e.render() for e in load_text(text, "u64.yaml").errors][0] == (
        "u64.yaml:17: spec.kprobes[0].selectors[0].matchArgs[0].values[0]: 18446744073709551615 does not "
        "fit a uint64 argument (range 0 to 9223372036854775807)")


def test_a_missing_file_has_its_own_code(tmp_path):
    with pytest.raises(PolicyError) as info:
        read_policy_file(tmp_path / "gone.yaml")
    assert info.value.code == "missing"
    assert info.value.render() == f"{tmp_path / 'gone.yaml'}: cannot read the file: No such file or directory"
