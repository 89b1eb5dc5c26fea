"""Policy reload latency: from a policy file written into the watched directory
to its enforcement being active.

Starts the agent (tests/kernel/launch_agent.py: policy directory + control
socket) on a temp directory; each run writes block-cryptominers targeting a
fresh /tmp/<unique>-miner (a copy of /usr/bin/true) and execs the target in a
tight loop until it is SIGKILLed; the time from the write's close() to the
first SIGKILL is one sample.  The file is then deleted and the next run waits
`--gap` seconds (the agent's warm pool of verified BPF objects refills in
the background; a reload faster than that pays the verifier, ~0.5 s here).

    sudo .venv/bin/python bench/policy_reload.py [--runs 40] [--gap 1.0]
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "conformance" / "seed-policies" / "block-cryptominers.yaml"


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--gap", type=float, default=1.0)
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="th-bench-"))
    pdir = tmp / "policies.d"
    log = open(tmp / "agent.log", "w+")
    agent = subprocess.Popen([sys.executable, str(REPO / "tests/kernel/launch_agent.py"), "--export-file",
                              str(tmp / "events.json"), "--policy-dir", str(pdir), "--socket", str(tmp / "s.sock")],
                             stderr=log, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while "tetrahost ready" not in (tmp / "agent.log").read_text():
            if agent.poll() is not None or time.monotonic() > deadline:
                print((tmp / "agent.log").read_text(), file=sys.stderr)
                return 1
            time.sleep(0.05)
        template = SEED.read_text()
        samples, cold = [], None
        for i in range(args.runs + 1):
            miner = pathlib.Path(f"/tmp/{uuid.uuid4().hex[:10]}-miner")
            shutil.copy2("/usr/bin/true", miner)
            path = pdir / f"bench-{i}.yaml"
            text = template.replace('"/tmp/xmrig"', f'"{miner}"').replace("name: block-cryptominers",
                                                                            f"name: bench-{i}")
            try:
                with open(path, "w") as f:
                    f.write(text)
                t0 = time.monotonic()          # close() below is what the agent reacts to
                while subprocess.run([str(miner)]).returncode != -9:
                    if time.monotonic() - t0 > 10:
                        raise SystemExit(f"run {i}: never enforced")
                took = time.monotonic() - t0
            finally:
                path.unlink(missing_ok=True)
                miner.unlink(missing_ok=True)
            if i == 0:
                cold = took                    # first policy: no verified object in the pool yet
            else:
                samples.append(took)
            time.sleep(args.gap)
        ms = [s * 1000 for s in samples]
        print(f"policy reload latency, write -> enforcing, {len(ms)} runs (gap {args.gap}s):")
        print(f"  p50 {pct(ms, 50):.1f} ms   p90 {pct(ms, 90):.1f} ms   p99 {pct(ms, 99):.1f} ms   "
              f"max {max(ms):.1f} ms   mean {statistics.mean(ms):.1f} ms")
        print(f"  cold first load (verifier, empty pool): {cold * 1000:.1f} ms")
        return 0
    finally:
        agent.send_signal(2)
        agent.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
