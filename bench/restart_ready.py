"""Restart-to-ready time of the agent with pinned state: adopted vs fresh.

For 4 and 40 policies (one Sigkill hook each), starts the agent on an empty
pin directory (everything loaded fresh: verifier, attach), kill -9's it, and
starts it again (everything adopted from the pins: no program loaded).  The
time is from the agent's exec to its "tetrahost ready" log line, the median
of ROUNDS.  Prints one line per policy count with the ratio.

    sudo .venv/bin/python bench/restart_ready.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Sigkill on exec of /tmp/{name}: the tests' policy (tests/policies/kill-exec.yaml.in).
with open(os.path.join(REPO, "tests", "policies", "kill-exec.yaml.in")) as _f:
    POLICY = _f.read().replace("{targets}", '["/tmp/{name}"]')


def start_until_ready(workdir: str, policies: list[str], pin_dir: str) -> tuple[subprocess.Popen, float]:
    log = open(os.path.join(workdir, f"agent-{uuid.uuid4().hex[:6]}.log"), "w+")
    args = [sys.executable, "-m", "tetrahost.cli.main", "run", "--no-stdout", "--no-socket",
            "--metrics-address", "off", "--no-journald", "--export-file", os.path.join(workdir, "events.json"),
            "--pin-dir", pin_dir]
    for p in policies:
        args += ["--policy", p]
    began = time.monotonic()
    proc = subprocess.Popen(args, stderr=log, stdout=subprocess.DEVNULL, cwd=REPO,
                            env={**os.environ, "TETRAHOST_POLICY_SPARES": "0"})
    while True:
        log.seek(0)
        if "tetrahost ready" in log.read():
            return proc, time.monotonic() - began
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"agent exited {proc.returncode}:\n{log.read()[-3000:]}")
        if time.monotonic() - began > 300:
            proc.kill()
            raise SystemExit("agent not ready after 300 s")
        time.sleep(0.01)


def measure(count: int, rounds: int) -> tuple[float, float]:
    fresh, adopted = [], []
    with tempfile.TemporaryDirectory(prefix="th-restart-") as workdir:
        tag = uuid.uuid4().hex[:8]
        policies = []
        for i in range(count):
            path = os.path.join(workdir, f"p{i}.yaml")
            with open(path, "w") as f:
                f.write(POLICY.format(name=f"bench-restart-{tag}-{i}"))
            policies.append(path)
        pin_dir = f"/sys/fs/bpf/tetrahost-bench-{tag}"
        try:
            for _ in range(rounds):
                proc, t = start_until_ready(workdir, policies, pin_dir)     # empty pin dir: fresh
                fresh.append(t)
                proc.kill()
                proc.wait()
                proc, t = start_until_ready(workdir, policies, pin_dir)     # same pins: adopted
                adopted.append(t)
                proc.send_signal(2)                                         # orderly stop: pins removed
                proc.wait()
        finally:
            shutil.rmtree(pin_dir, ignore_errors=True)
    return statistics.median(fresh), statistics.median(adopted)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--counts", default="4,40")
    args = ap.parse_args()
    print(f"{'policies':>8} {'fresh s':>8} {'adopted s':>9} {'fresh/adopted':>13}")
    for count in map(int, args.counts.split(",")):
        fresh, adopted = measure(count, args.rounds)
        print(f"{count:>8} {fresh:>8.2f} {adopted:>9.2f} {fresh / adopted:>12.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
