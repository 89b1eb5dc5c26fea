"""Client side of the control socket (used by `tetra`)."""
from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterator

from tetrahost.control import protocol


class NoAgent(Exception):
    """No agent answers on the socket (not running, wrong path, not root)."""


class ControlClient:
    def __init__(self, path: str = protocol.DEFAULT_SOCKET, timeout: float | None = 30.0):
        self.path = path
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        if timeout is not None:
            # A blocking connect waits while the agent's backlog is full (a
            # non-blocking one, as settimeout() makes it, fails at once with
            # EAGAIN); SO_SNDTIMEO bounds that wait.
            sec = int(timeout)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                 struct.pack("ll", sec, int((timeout - sec) * 1e6)))
        try:
            self.sock.connect(path)
        except FileNotFoundError:
            self.sock.close()
            raise NoAgent(f"no agent socket at {path} (is tetrahost running?)") from None
        except ConnectionRefusedError:
            self.sock.close()
            raise NoAgent(f"nothing listens on {path} (tetrahost stopped?)") from None
        except PermissionError:
            self.sock.close()
            raise NoAgent(f"permission denied on {path}: the control socket is root-only") from None
        except (TimeoutError, BlockingIOError):
            self.sock.close()
            raise NoAgent(f"the agent did not accept a connection on {path} within {timeout:g} s") from None
        self.sock.settimeout(timeout)
        self._file = self.sock.makefile("rb")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._file.close()
        self.sock.close()

    def _readline(self) -> dict:
        try:
            line = self._file.readline()
        except TimeoutError:
            raise NoAgent(f"the agent did not answer on {self.path} within {self.timeout:g} s") from None
        except ConnectionResetError:
            line = b""
        if not line:
            raise NoAgent(f"the agent closed {self.path} without answering")
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise NoAgent(f"the agent on {self.path} sent a malformed reply: {line[:200]!r}")
        return answer

    def call(self, op: str, **fields) -> dict:
        """The agent's reply; a request over protocol.MAX_FRAME is refused here, as the agent would."""
        frame = protocol.request(op, **fields)
        if len(frame) > protocol.MAX_FRAME:
            return {"version": protocol.VERSION, "ok": False, "code": protocol.FRAME_TOO_LARGE,
                    "limit": protocol.MAX_FRAME,
                    "error": f"request too large: {op} is {_size(len(frame))} encoded, the control "
                             f"socket accepts at most {_size(protocol.MAX_FRAME)} per request"}
        try:
            self.sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            pass        # the agent stopped reading (refused, evicted): its reason is in the reply below
        except TimeoutError:
            raise NoAgent(f"the agent did not take the request on {self.path} "
                          f"within {self.timeout:g} s") from None
        return self._readline()

    def stream(self, filter_spec: dict) -> Iterator[str]:
        """Lines of a getevents stream (event and dropped-notice lines), as text."""
        answer = self.call("getevents", filter=filter_spec)
        if not answer.get("ok"):
            raise ValueError(answer.get("error", "getevents refused"))
        self.sock.settimeout(None)          # a quiet host sends nothing for a long time
        for raw in self._file:
            yield raw.decode("utf-8", "surrogateescape").rstrip("\n")


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def socket_exists(path: str) -> bool:
    return os.path.exists(path)
