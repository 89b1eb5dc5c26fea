"""Client side of the control socket (used by `tetra`)."""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

from tetrahost.control import protocol


class NoAgent(Exception):
    """No agent answers on the socket (not running, wrong path, not root)."""


class ControlClient:
    def __init__(self, path: str = protocol.DEFAULT_SOCKET, timeout: float | None = 30.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
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
        self._file = self.sock.makefile("rb")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._file.close()
        self.sock.close()

    def _readline(self) -> dict:
        line = self._file.readline()
        if not line:
            raise NoAgent(f"the agent closed {self.path} without answering")
        return json.loads(line)

    def call(self, op: str, **fields) -> dict:
        self.sock.sendall(protocol.request(op, **fields))
        return self._readline()

    def stream(self, filter_spec: dict) -> Iterator[str]:
        """Lines of a getevents stream (event and dropped-notice lines), as text."""
        answer = self.call("getevents", filter=filter_spec)
        if not answer.get("ok"):
            raise ValueError(answer.get("error", "getevents refused"))
        self.sock.settimeout(None)          # a quiet host sends nothing for a long time
        for raw in self._file:
            yield raw.decode("utf-8", "surrogateescape").rstrip("\n")


def socket_exists(path: str) -> bool:
    return os.path.exists(path)
