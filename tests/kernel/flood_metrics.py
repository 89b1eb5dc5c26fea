"""Test helper: hold ~N slow connections to a metrics port until stdin closes.

    python flood_metrics.py PORT N

Raises its own RLIMIT_NOFILE (root) to hold N sockets.  Every connection sends
an unfinished request head and then nothing (slowloris); a connection the
server closes is opened again, at most RECONNECTS_PER_TURN per turn, so the
pressure lasts for the whole test.  Prints "flooding" once N connects were
started, and at exit "connects=C closed_by_server=S".
"""
from __future__ import annotations

import os
import resource
import selectors
import socket
import sys

RECONNECTS_PER_TURN = 100
HEAD = b"GET /metrics HTTP/1.1\r\nHost: flood\r\n"


def main() -> int:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256, max(n + 256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])))
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
    stats = {"connects": 0, "closed": 0}

    def open_one() -> bool:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return False
        stats["connects"] += 1
        sel.register(s, selectors.EVENT_WRITE, "new")
        return True

    for _ in range(n):
        open_one()
    missing = n - stats["connects"]
    print("flooding", flush=True)
    while True:
        for key, _ in sel.select(0.2):
            if key.data == "stdin":
                if not os.read(key.fd, 4096):
                    print(f"connects={stats['connects']} closed_by_server={stats['closed']}", flush=True)
                    return 0
                continue
            s = key.fileobj
            if key.data == "new":                 # connected (or failed): send the unfinished head
                try:
                    s.send(HEAD)
                    sel.modify(s, selectors.EVENT_READ, "held")
                    continue
                except OSError:
                    pass
            else:
                try:
                    if s.recv(4096):
                        continue
                except BlockingIOError:
                    continue
                except OSError:
                    pass
            stats["closed"] += 1
            sel.unregister(s)
            s.close()
            missing += 1
        for _ in range(min(missing, RECONNECTS_PER_TURN)):
            if not open_one():
                break
            missing -= 1


if __name__ == "__main__":
    sys.exit(main())
