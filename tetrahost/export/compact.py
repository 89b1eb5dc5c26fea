"""One-line human output, after `tetra getevents -o compact`.

Works on Tetragon-shaped event dicts (a parsed JSON line, or
TetragonJSON.event_dict), so the same code serves the daemon's stdout
exporter and the tetra CLI reading JSON from a pipe.

  🚀 process host1 /usr/bin/curl https://example.org
  💥 exit    host1 /usr/bin/curl https://example.org 0
  💥 exit    host1 /usr/bin/sleep 60 SIGKILL
  🔌 connect host1 /usr/bin/curl tcp 10.1.0.1:40000 -> 10.1.0.2:443

Layout as Tetragon's compact encoder: icon, the label padded to 7 columns,
the source (node name), the binary, then event details; the exit shows the
signal name when a signal ended the process, else the status.  A process with
CAP_SYS_ADMIN in its effective set gets "🛑 CAP_SYS_ADMIN" right-aligned near
column 120.  Differences, on purpose: no trailing space when there are no
arguments (and no double space before an exit's status), network hooks
Tetragon's compact output shows as "syscall" get their verb (listen, accept,
datagram, connect at security_socket_connect...), and kprobe /
tracepoint / LSM events whose policy action killed or overrode get a suffix
("💥 SIGKILL", "⛔ OVERRIDE") -- Tetragon's compact output does not show actions.

Event kinds not handled yet have their icon reserved in EVENT_STYLES; an
unknown kind raises CompactError (the caller reports and goes on).

Every string of the event is shown through tetrahost.export.terminal
(control characters, ESC sequences, newlines, bidi controls and bytes that are
not UTF-8 become visible \\xNN / \\n escapes): process names and arguments
are chosen by whoever runs the process, and must not drive the terminal.
"""
from __future__ import annotations

import json

from tetrahost.export.terminal import is_plain_line, terminal_safe

__all__ = ["CompactError", "EVENT_STYLES", "ACTION_MARKS", "compact_of", "format_event", "format_line",
           "process_line"]


class CompactError(ValueError):
    """The event cannot be shown (unknown kind, or no process)."""


# event kind -> (icon, label) of its default line.
EVENT_STYLES = {
    "process_exec": ("🚀", "process"),
    "process_exit": ("💥", "exit"),
    "process_kprobe": ("❓", "syscall"),
    "process_tracepoint": ("⁉️", "tracepoint"),
    "process_lsm": ("🔒", "LSM"),
    "process_uprobe": ("🕵️", "uprobe"),
    "process_usdt": ("🕵️", "usdt"),
    "process_loader": ("🧬", "loader"),
    "process_throttle": ("🧬", "throttle"),
}

# Policy actions worth a mark on the line (tetrahost extension).
ACTION_MARKS = {
    "KPROBE_ACTION_SIGKILL": "💥 SIGKILL",
    "KPROBE_ACTION_OVERRIDE": "⛔ OVERRIDE",
    "KPROBE_ACTION_NOTIFYENFORCER": "⛔ ENFORCED",
}

# Kprobe functions with a line of their own (Tetragon shows these the same way).
_KPROBE_STYLES = {
    "sys_write": ("📝", "write"),
    "sys_read": ("📚", "read"),
    "fd_install": ("📬", "open"),
    "sys_openat": ("📬️", "openat"),
    "sys_open": ("📬️", "open"),
    "sys_close": ("📪", "close"),
    "sys_mount": ("💾", "mount"),
    "sys_setuid": ("🔑", "setuid"),
    "sys_setns": ("🔧", "setns"),
    "sys_clock_settime": ("⏰", "clock_settime"),
    "tcp_connect": ("🔌", "connect"),
    "tcp_close": ("🧹", "close"),
    "tcp_sendmsg": ("📤", "sendmsg"),
}

# Network functions (kprobes, and LSM hooks by their hook name): the line
# shows the connection from the first network argument.
_NET_STYLES = {
    "tcp_connect": ("🔌", "connect"),
    "tcp_v4_connect": ("🔌", "connect"),
    "tcp_v6_connect": ("🔌", "connect"),
    "security_socket_connect": ("🔌", "connect"),
    "socket_connect": ("🔌", "connect"),
    "sys_connect": ("🔌", "connect"),
    "inet_csk_listen_start": ("👂", "listen"),
    "security_socket_listen": ("👂", "listen"),
    "socket_listen": ("👂", "listen"),
    "inet_csk_accept": ("🤝", "accept"),
    "tcp_create_openreq_child": ("🤝", "accept"),
    "security_socket_accept": ("🤝", "accept"),
    "socket_accept": ("🤝", "accept"),
    "tcp_close": ("🧹", "close"),
    "tcp_set_state": ("🔀", "state"),
    "tcp_sendmsg": ("📤", "sendmsg"),
    "udp_sendmsg": ("📤", "sendmsg"),
    "udpv6_sendmsg": ("📤", "sendmsg"),
    "security_socket_sendmsg": ("📤", "sendmsg"),
    "socket_sendmsg": ("📤", "sendmsg"),
    "__cgroup_bpf_run_filter_skb": ("📦", "datagram"),
    "ip_send_skb": ("📦", "datagram"),
    "ip6_send_skb": ("📦", "datagram"),
    "udp_send_skb": ("📦", "datagram"),
}

_SYSCALL_PREFIXES = ("__x64_", "__ia32_", "__arm64_", "__se_", "__do_")

CAPS_COLUMN = 120

_ANSI = {"red": "31", "green": "32", "blue": "34", "magenta": "35", "cyan": "36"}


def _paint(text: str, color: str, enabled: bool) -> str:
    if not enabled or not text:
        return text
    return f"\x1b[{_ANSI[color]}m{text}\x1b[0m"


def _syscall_name(function: str) -> str:
    for prefix in _SYSCALL_PREFIXES:
        if function.startswith(prefix):
            return function[len(prefix):]
    return function


def _arg(args: list, index: int) -> dict:
    if index < len(args) and isinstance(args[index], dict):
        return args[index]
    return {}


def _endpoint(addr, port) -> str:
    addr = str(addr or "")
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _proto(value) -> str:
    """"IPPROTO_TCP" (or 6) -> "tcp"."""
    if isinstance(value, int):
        return {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6"}.get(value, str(value))
    text = str(value or "")
    return text[len("IPPROTO_"):].lower() if text.startswith("IPPROTO_") else text.lower()


def _sock(arg: dict) -> str:
    """"tcp 10.1.0.1:40000 -> 10.1.0.2:443" from a sock_arg or skb_arg."""
    sa = arg.get("sock_arg") or arg.get("skb_arg") or {}
    if not sa or "saddr" not in sa:
        return ""
    proto = _proto(sa.get("protocol") or sa.get("proto") or "tcp")
    return (f"{proto} {_endpoint(sa.get('saddr'), sa.get('sport', 0))} -> "
            f"{_endpoint(sa.get('daddr'), sa.get('dport', 0))}")


def _net_details(args: list) -> str:
    """The connection a network event is about.  A sockaddr argument (the
    connect/bind target) wins, with the protocol of the socket beside it
    (an unconnected socket has no addresses yet); else the first sock/skb."""
    args = [a for a in args if isinstance(a, dict)]
    for a in args:
        if "sockaddr_arg" in a:
            sa = a["sockaddr_arg"] or {}
            if "addr" not in sa:
                return str(sa.get("family", ""))
            proto = next((_proto((b.get("sock_arg") or {}).get("protocol", "")) for b in args
                          if (b.get("sock_arg") or {}).get("protocol")), "")
            return " ".join(p for p in (proto, "->", _endpoint(sa["addr"], sa.get("port", 0))) if p)
    for a in args:
        if "sock_arg" in a or "skb_arg" in a:
            text = _sock(a)
            if text:
                return text
        elif "net_dev_arg" in a or "netdev_arg" in a:     # netdev_arg: lines of earlier versions
            return str((a.get("net_dev_arg") or a.get("netdev_arg") or {}).get("name", ""))
    return ""


def _kprobe_details(function: str, args: list) -> tuple[str, str, str]:
    """(icon, label, details) for a kprobe line."""
    name = _syscall_name(function)
    net = _net_details(args)
    if name in _NET_STYLES and (name not in _KPROBE_STYLES or net):
        icon, label = _NET_STYLES[name]
        return icon, label, net
    style = _KPROBE_STYLES.get(name)
    if style is None and net:
        icon, label = EVENT_STYLES["process_kprobe"]
        return icon, label, f"{function} {net}"
    if style is None:
        icon, label = EVENT_STYLES["process_kprobe"]
        return icon, label, function
    icon, label = style
    if name in ("sys_write", "sys_read"):
        path = (_arg(args, 0).get("file_arg") or {}).get("path", "")
        size = _arg(args, 2).get("size_arg")
        return icon, label, f"{path} {size} bytes" if size is not None else path
    if name == "fd_install":
        return icon, label, (_arg(args, 1).get("file_arg") or {}).get("path", "")
    if name in ("sys_openat", "sys_open"):
        return icon, label, str(_arg(args, 1).get("string_arg", ""))
    if name == "sys_close":
        return icon, label, (_arg(args, 0).get("file_arg") or {}).get("path", "")
    if name == "sys_mount":
        return icon, label, " ".join(str(_arg(args, i).get("string_arg", "")) for i in (0, 1))
    if name == "sys_setuid":
        return icon, label, str(_arg(args, 0).get("int_arg", ""))
    if name in ("tcp_connect", "tcp_close", "tcp_sendmsg"):
        return icon, label, _sock(_arg(args, 0))
    return icon, label, ""


def _uprobe_args(args: list) -> str:
    """A user function's arguments: numbers and strings, in order."""
    shown = []
    for a in args:
        if not isinstance(a, dict):
            continue
        value = next((a[k] for k in ("int_arg", "uint_arg", "size_arg", "long_arg", "string_arg") if k in a), None)
        if value is not None:
            shown.append(str(value))
    return " ".join(shown)


SYS_ADMIN_MARK = "🛑 CAP_SYS_ADMIN"


def _caps_trailer(process: dict) -> str:
    effective = (process.get("cap") or {}).get("effective") or ()
    return SYS_ADMIN_MARK if "CAP_SYS_ADMIN" in effective else ""


def _line(icon: str, label: str, node: str, process: dict, details: list[str],
          color: bool) -> str:
    return _joined(icon, label, node, process.get("binary", ""), details, _caps_trailer(process), color)


def _joined(icon: str, label: str, node: str, binary: str, details, caps: str, color: bool) -> str:
    parts = [_paint(f"{icon} {label:<7}", "blue", color),
             _paint(node, "green", color),
             _paint(binary, "magenta", color)]
    parts.extend(d for d in details if d)
    text = " ".join(p for p in parts if p)
    if caps:
        text = f"{text} {_paint(caps, 'magenta', color):>{max(CAPS_COLUMN - len(text), 0)}}"
    return text


def process_line(kind: str, node: str, binary: str, details: tuple[str, ...], sys_admin: bool) -> str:
    """The line of a process_exec / process_exit event (no colour, no time)
    from its pieces, already terminal-safe: what _format makes of the
    event's dict, without building and walking one.  The renderer of
    process events calls it (TetragonJSON.compact_line) for journald's
    MESSAGE and compact stdout; details: (arguments,) of an exec,
    (arguments, signal name or status) of an exit."""
    icon, label = EVENT_STYLES[kind]
    return _joined(icon, label, node, binary, details, SYS_ADMIN_MARK if sys_admin else "", False)


def format_line(line: str, *, color: bool = False, timestamps: bool = False) -> str:
    """The compact line for one JSON line (ValueError if it is not JSON, CompactError)."""
    event = json.loads(line)
    if not is_plain_line(line):       # most lines: nothing to escape, skip the walk
        event = terminal_safe(event)
    return _format(event, color, timestamps)


def compact_of(event, *, color: bool = False, timestamps: bool = False) -> str:
    """The compact line of a tetrahost.events.event.Event, from its dict form
    (made by the renderers, not parsed from the line; a process event's own
    line, Event.compact, comes from its pieces: process_line); the escaping
    walk is skipped when the event's line, if made, shows nothing to escape."""
    data = event.data
    line = event.json_made
    if line is None or not is_plain_line(line):
        data = terminal_safe(data)
    return _format(data, color, timestamps)


def format_event(event: dict, *, color: bool = False, timestamps: bool = False) -> str:
    """The compact line for one Tetragon-shaped event dict (strings escaped for a terminal)."""
    return _format(terminal_safe(event), color, timestamps)


def _format(event: dict, color: bool, timestamps: bool) -> str:
    if not isinstance(event, dict):
        raise CompactError("event is not a JSON object")
    kind = next((k for k in event if k in EVENT_STYLES), None)
    if kind is None:
        known = ", ".join(k for k in event if k not in ("node_name", "time")) or "nothing"
        raise CompactError(f"unknown event kind ({known})")
    body = event[kind]
    if not isinstance(body, dict):
        raise CompactError(f"{kind} is not an object")
    node = str(event.get("node_name", ""))
    icon, label = EVENT_STYLES[kind]

    if kind == "process_throttle":
        line = " ".join(p for p in (_paint(f"{icon} {label:<7}", "red", color),
                                    str(body.get("type", "")), str(body.get("cgroup", ""))) if p)
        return _with_time(line, event, timestamps)

    process = body.get("process")
    if not isinstance(process, dict):
        raise CompactError(f"{kind} has no process")
    details: list[str] = []
    if kind == "process_exec":
        details.append(_paint(process.get("arguments", ""), "cyan", color))
    elif kind == "process_exit":
        details.append(_paint(process.get("arguments", ""), "cyan", color))
        outcome = body.get("signal") or str(body.get("status", 0))
        details.append(_paint(outcome, "red", color))
    elif kind == "process_kprobe":
        icon, label, detail = _kprobe_details(str(body.get("function_name", "")),
                                              body.get("args") or [])
        details.append(_paint(detail, "cyan", color))
    elif kind == "process_tracepoint":
        details.append(f"{body.get('subsys', '')} {body.get('event', '')}".strip())
        details.append(_paint(_net_details(body.get("args") or []), "cyan", color))
    elif kind == "process_lsm":
        function = str(body.get("function_name", ""))
        net = _net_details(body.get("args") or [])
        if function in _NET_STYLES:
            icon, label = _NET_STYLES[function]
            details.append(_paint(net, "cyan", color))
        else:
            details.append(f"{function} {net}".strip())
    elif kind == "process_uprobe":
        where = body.get("symbol") or (f"+{int(body['offset']):#x}" if str(body.get("offset", "")).isdigit() else "")
        details.append(f"{body.get('path', '')} {where}".strip())
        details.append(_paint(_uprobe_args(body.get("args") or []), "cyan", color))
    elif kind == "process_usdt":
        details.append(" ".join(str(body.get(k, "")) for k in ("path", "provider", "name")).strip())
        details.append(_paint(_uprobe_args(body.get("args") or []), "cyan", color))
    elif kind == "process_loader":
        details.append(str(body.get("path", "")))
    # a uprobe's action is only among the host fields (ProcessUprobe has none)
    host = event.get("tetrahost")
    action = body.get("action") or (host.get("action", "") if isinstance(host, dict) else "")
    mark = ACTION_MARKS.get(str(action))
    if mark:
        details.append(_paint(mark, "red", color))
    return _with_time(_line(icon, label, node, process, details, color), event, timestamps)


def _with_time(line: str, event: dict, timestamps: bool) -> str:
    if timestamps and event.get("time"):
        return f"{event['time']} {line}"
    return line
