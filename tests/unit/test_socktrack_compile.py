"""TrackSock / UntrackSock in user space: validation, what they compile to,
and the returned sock in the event."""
import textwrap

import pytest

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.export.arg_json import render_return
from tetrahost.policy import load_text
from tetrahost.policy.compile import CompileError, compile_hook

HEADER = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n"


def load(spec: str):
    return load_text(HEADER + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n", file="p.yaml")


def compiled(spec: str):
    result = load(spec)
    assert result.ok, [e.render() for e in result.errors]
    return compile_hook(result.policies[0].hooks[0], 1, HostNamespaces.unknown()).config


def untrack(actions: str, arg_type: str = "sock") -> str:
    return f"""
kprobes:
- call: tcp_close
  args:
  - {{index: 0, type: int}}
  - {{index: 1, type: {arg_type}}}
  selectors:
  - matchActions:
{textwrap.indent(textwrap.dedent(actions).strip(chr(10)), "    ")}
"""


def test_untrack_with_nopost_compiles_to_the_action_and_no_post():
    sel = compiled(untrack("- {action: UntrackSock, argSock: 1}\n- {action: NoPost}")).selectors[0]
    assert (sel.action, sel.action_arg, sel.no_post) == (lib.TH_ACTION_UNTRACK_SOCK, 1, 1)


def test_arg_sock_defaults_to_zero_and_must_name_a_sock():
    result = load(untrack("- {action: TrackSock}"))
    assert [e.render().split(": ", 1)[1] for e in result.errors] == [
        "spec.kprobes[0].selectors[0].matchActions[0].argSock: TrackSock: args[0] is of type int, "
        "not sock or socket (argSock defaults to 0)"]
    result = load(untrack("- {action: TrackSock, argSock: 7}"))
    assert not result.ok and "argSock 7 names no argument (the hook has 2)" in result.errors[0].render()


def test_socket_action_beside_an_enforcement_is_refused():
    with pytest.raises(CompileError, match="one of Sigkill/Signal/Override/Set/TrackSock/UntrackSock"):
        compiled(untrack("- {action: UntrackSock, argSock: 1}\n- {action: Sigkill}"))


def test_sigkill_with_nopost_kills_silently():
    sel = compiled(untrack("- {action: Sigkill}\n- {action: NoPost}")).selectors[0]
    assert (sel.action, sel.no_post) == (lib.TH_ACTION_SIGKILL, 1)


RETURN_SOCK = """
kprobes:
- call: inet_csk_accept
  return: true
  args:
  - {index: 0, type: sock}
  returnArg: {index: 0, type: sock}
  returnArgAction: %s
"""


def test_return_arg_sock_and_track_sock():
    cfg = compiled(RETURN_SOCK % "TrackSock")
    assert (cfg.ret_kind, cfg.ret_action) == (lib.TH_ARG_SOCK, lib.TH_ACTION_TRACK_SOCK)
    assert compiled(RETURN_SOCK % "Post").ret_action == 0


def test_track_sock_needs_a_sock_return():
    spec = (RETURN_SOCK % "TrackSock").replace("returnArg: {index: 0, type: sock}", "returnArg: {index: 0, type: int}")
    with pytest.raises(CompileError, match="returnArgAction TrackSock needs a returnArg of type sock or socket"):
        compiled(spec)


def test_returned_sock_renders_as_sock_arg():
    hook = load(RETURN_SOCK % "TrackSock").policies[0].hooks[0]
    t = ffi.new("struct th_sock_tuple *")
    t.family, t.type, t.protocol, t.state = 2, 1, 6, 10
    t.flags = lib.TH_SOCK_HAS_PORTS
    t.sport, t.cookie = 8080, 0xffff888012345678
    ffi.memmove(t.saddr, bytes([127, 0, 0, 1]), 4)
    out = render_return(hook, 0, bytes(ffi.buffer(t)))
    assert out["sock_arg"]["sport"] == 8080 and out["sock_arg"]["saddr"] == "127.0.0.1"
    assert out["sock_arg"]["cookie"] == str(0xffff888012345678) and out["sock_arg"]["state"] == "TCP_LISTEN"
