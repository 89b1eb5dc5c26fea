"""Reading and parsing policy files that anyone with write access may have shaped.

The policy directory is the agent's widest door: a file there can be a FIFO
(opening it blocks), a symlink to /dev/zero or /proc/self/mem (endless or
failing reads), gigabytes long, or YAML whose aliases expand exponentially
or nest deeper than the interpreter's stack.  Two defences here:

  read_policy_file  opens without blocking (O_NONBLOCK, regular files only,
                    checked on the open fd) and reads at most a size limit;
  ParseInChild      runs load_text in a worker process of its own (started
                    once, restarted after a failure) with an address-space
                    limit and a deadline.  Whatever the parser does with a hostile
                    file -- loop, recurse, allocate -- ends in the child as an
                    error for that file; the agent's loop and memory are
                    untouched.  Results come back pickled (LoadResult).
"""
from __future__ import annotations

import logging
import os
import pickle
import resource
import struct
import subprocess
import sys
import time

from tetrahost.policy.errors import PolicyError
from tetrahost.policy.load import LoadResult, load_text, read_policy_bytes

log = logging.getLogger(__name__)

PARSE_TIMEOUT = 5.0                  # seconds; a real policy parses in milliseconds
# A new worker imports the parser before it can answer: seconds on a slow or
# emulated CPU.  Its own allowance, separate from a file's parse time, which
# starts when the worker says it is ready (an empty frame).
STARTUP_TIMEOUT = 120.0
PARSE_MEMORY = 1 << 30               # address space of the parsing child (bytes)


class UnreadablePolicy(Exception):
    """The name exists but is not a policy file that can be read (the reason is the message)."""


def read_policy_file(path: str, max_bytes: int) -> bytes | None:
    """The bytes of the regular file at path (symlinks followed); None if the
    name does not exist.  UnreadablePolicy for anything else: never blocks,
    never reads more than max_bytes + 1 (load.read_policy_bytes)."""
    try:
        return read_policy_bytes(path, path, max_bytes)
    except PolicyError as exc:
        if exc.code == "missing":
            return None
        raise UnreadablePolicy(exc.message) from None


def error_result(path: str, message: str) -> LoadResult:
    return LoadResult(path, errors=[PolicyError(path, 0, "", message, "unreadable")])


def _portable(result: LoadResult) -> tuple:
    """LoadResult as picklable parts (PolicyError, an Exception with a
    keyword-rich constructor, does not survive pickle as it is)."""
    errors = [(e.file, e.line, e.path, e.message, e.code, e.detail) for e in result.errors]
    return result.file, result.policies, errors, result.warnings


def _from_portable(parts: tuple) -> LoadResult:
    file, policies, errors, warnings = parts
    return LoadResult(file, policies, [PolicyError(*e) for e in errors], warnings)


_FRAME = struct.Struct("<Q")


def _frame(obj) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(data)) + data


def worker_main() -> int:
    """The parsing process: (path, text) requests on stdin, portable results on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (PARSE_MEMORY, PARSE_MEMORY))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(_FRAME.pack(0))                  # ready: the parser is imported
    stdout.flush()
    while True:
        header = stdin.read(_FRAME.size)
        if len(header) < _FRAME.size:
            return 0                              # the agent went away
        path, text = pickle.loads(stdin.read(_FRAME.unpack(header)[0]))
        fatal = False
        try:
            result = load_text(text, file=path)
        except BaseException as exc:              # reported for the file; the agent decides
            fatal = isinstance(exc, MemoryError)  # the heap may be in no state to go on
            result = error_result(path, f"the policy parser failed: {type(exc).__name__}: "
                                        + " ".join(str(exc).split())[:200])
        try:
            reply = _frame(_portable(result))
        except Exception as exc:                  # e.g. MemoryError while pickling a huge result
            fatal = True
            reply = _frame(_portable(error_result(path, "the policy parser's result cannot be returned: "
                                                        f"{type(exc).__name__}")))
        stdout.write(reply)
        stdout.flush()
        if fatal:
            return 1


class PendingParse:
    """One file being parsed by the worker; poll() until it gives a LoadResult."""

    def __init__(self, owner: "ParseInChild", path: str, text: str):
        self.owner, self.path = owner, path
        self._buf = b""
        owner._send(_frame((path, text)))
        now = time.monotonic()
        # the file's time starts when the worker is ready; a new one first imports the parser
        self.deadline = now + (owner.timeout if owner.ready else STARTUP_TIMEOUT)

    def poll(self) -> LoadResult | None:
        """The result, or None while the worker works (an error result when it
        dies, runs out of memory or out of time: the next parse starts a new one)."""
        proc = self.owner._proc
        try:
            while True:
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    return self._failed("died")
                self._buf += chunk
                if not self.owner.ready and len(self._buf) >= _FRAME.size:
                    if _FRAME.unpack_from(self._buf)[0] != 0:
                        return self._failed("died")          # not our worker's greeting
                    self._buf = self._buf[_FRAME.size:]
                    self.owner.ready = True
                    self.deadline = time.monotonic() + self.owner.timeout
                if self.owner.ready and len(self._buf) >= _FRAME.size:
                    size = _FRAME.unpack_from(self._buf)[0]
                    if len(self._buf) >= _FRAME.size + size:
                        return _from_portable(pickle.loads(self._buf[_FRAME.size:_FRAME.size + size]))
        except BlockingIOError:
            pass
        except OSError:
            return self._failed("died")
        if time.monotonic() > self.deadline:
            return self._failed("timeout")
        return None

    def _failed(self, how: str) -> LoadResult:
        was_ready = self.owner.ready
        code = self.owner.restart()
        if how == "timeout" and not was_ready:
            return error_result(self.path, f"the policy parser did not start within {STARTUP_TIMEOUT:.0f} s")
        if how == "timeout":
            return error_result(self.path, f"parsing took longer than {self.owner.timeout:.0f} s: the file is "
                                           "too complex (deeply nested or alias-expanding YAML?)")
        why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return error_result(self.path, f"the policy parser died ({why}): the file is too complex")

    def cancel(self) -> None:
        self.owner.restart()      # the worker may be mid-parse: a fresh one answers the next request


def _worker_env() -> dict:
    """Our environment, with this copy of tetrahost first on the path: the
    packaged entry points put a private directory on sys.path, which a new
    interpreter would not know."""
    import tetrahost
    root = os.path.dirname(os.path.dirname(os.path.abspath(tetrahost.__file__)))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


class ParseInChild:
    """A long-lived parsing worker (python -m tetrahost.policy.isolated), one request at a time."""

    def __init__(self, timeout: float = PARSE_TIMEOUT):
        self.timeout = timeout
        self.ready = False            # the current worker has greeted (imports done)
        self._proc: subprocess.Popen | None = None

    def start(self, path: str, text: str) -> PendingParse:
        """Begin parsing; OSError when no worker can be started (no fds, no memory)."""
        return PendingParse(self, path, text)

    def _send(self, data: bytes) -> None:
        if self._proc is None or self._proc.poll() is not None:
            self.restart()
            self._proc = subprocess.Popen([sys.executable, "-m", "tetrahost.policy.isolated"], cwd="/",
                                          env=_worker_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          close_fds=True)
            os.set_blocking(self._proc.stdout.fileno(), False)
        try:
            self._proc.stdin.write(data)      # the worker is idle, reading: this does not wait long
            self._proc.stdin.flush()
        except OSError:
            self.restart()
            raise

    def restart(self) -> int | None:
        """End the worker (the next request starts a new one); its exit code."""
        proc, self._proc = self._proc, None
        self.ready = False
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        return code

    close = restart


if __name__ == "__main__":
    sys.exit(worker_main())
