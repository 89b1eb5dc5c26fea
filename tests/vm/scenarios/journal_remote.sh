#!/bin/bash
# Scenario for `tests/vm/run.py --systemd`: central journals (docs/fleet.md).
# systemd-journal-upload sends this guest's journal to systemd-journal-remote
# on the same guest over loopback (plain HTTP here: a collector on another host
# uses HTTPS with certificates); the agent runs as a unit with journald export
# and a Sigkill policy; the kill must be found on the collector's side with
#   journalctl -D /var/log/journal/remote TETRAGON_ACTION=SIGKILL
# with its TETRAGON_* fields intact.  Needs Debian's systemd-journal-remote
# (scripts/vm-setup.sh installs it).
set -euo pipefail

fail() { echo "FAIL: $*"; journalctl --no-pager -n 30 -o cat -u th-agent -u systemd-journal-upload -u systemd-journal-remote || true; exit 1; }
wait_for() {
    local limit=$1 what=$2; shift 2
    local end=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || fail "timed out after ${limit}s waiting for: $what"
        sleep 1
    done
}
repo=$(cd "$(dirname "$0")/../../.." && pwd)
[ -x /lib/systemd/systemd-journal-remote ] || fail "systemd-journal-remote not installed (scripts/vm-setup.sh)"

echo "== writable /etc and /var over the read-only host root, tmpfs /tmp"
mkdir -p /run/jr && mount -t tmpfs -o size=512M,mode=0700 jr /run/jr
for d in etc var; do
    mkdir -p /run/jr/$d/up /run/jr/$d/work
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=/run/jr/$d/up,workdir=/run/jr/$d/work" "/$d"
done
# A checkout under /tmp would vanish under the tmpfs: keep it reachable elsewhere.
case "$repo" in /tmp/*)
    mkdir -p /run/jr/repo && mount --bind "$repo" /run/jr/repo && repo=/run/jr/repo ;;
esac
mount -t tmpfs -o mode=1777 tmp /tmp
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

echo "== collector: systemd-journal-remote on 127.0.0.1:19532 (socket unit), HTTP"
mkdir -p /etc/systemd/system/systemd-journal-remote.service.d
cat > /etc/systemd/system/systemd-journal-remote.service.d/http.conf <<'CONF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-journal-remote --listen-http=-3 --output=/var/log/journal/remote/
CONF
echo "== agent host: systemd-journal-upload to the collector"
mkdir -p /etc/systemd/journal-upload.conf.d
printf '[Upload]\nURL=http://127.0.0.1:19532\n' > /etc/systemd/journal-upload.conf.d/loopback.conf
systemctl daemon-reload
systemctl start systemd-journal-remote.socket || fail "journal-remote socket"
systemctl start systemd-journal-upload.service || fail "journal-upload"

echo "== the agent as a unit, journald export, a Sigkill policy"
tag=jr$$
mkdir -p /tmp/$tag/policies.d
cat > /tmp/$tag/agent.toml <<CONF
[agent]
policy_dir = "/tmp/$tag/policies.d"
[export]
filenames = []
[metrics]
enabled = false
CONF
# --policy, not the watched directory: its isolated parser has a 5 s budget that
# the emulated CPU can exceed while the agent starts.
cat > /tmp/$tag/miner.yaml <<YAML
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: th-remote-miner
spec:
  kprobes:
  - call: "security_bprm_check"
    syscall: false
    args:
    - index: 0
      type: "linux_binprm"
    selectors:
    - matchBinaries:
      - operator: "In"
        values:
        - "/tmp/$tag/xmrig"
      matchActions:
      - action: Sigkill
YAML
systemd-run --unit=th-agent -p Environment=TETRAHOST_POLICY_SPARES=0 -p Environment=PYTHONDONTWRITEBYTECODE=1 \
    --working-directory="$repo" "$repo/.venv/bin/python" -m tetrahost.cli.main run --no-stdout --no-socket \
    --config /tmp/$tag/agent.toml --policy /tmp/$tag/miner.yaml
agent_ready() { journalctl -u th-agent --no-pager -o cat | grep -q "tetrahost ready"; }
wait_for 240 "the agent to be ready" agent_ready
journalctl -u th-agent --no-pager -o cat | grep -q "th-remote-miner" || echo "(policy not named in the agent's log)"

echo "== a miner is killed"
cp /usr/bin/true /tmp/$tag/xmrig
set +e; /tmp/$tag/xmrig; rc=$?; set -e
[ "$rc" = 137 ] || fail "the miner exited $rc, not 137 (SIGKILL)"
local_kill() { journalctl --no-pager TETRAGON_ACTION=SIGKILL TETRAGON_POLICY=th-remote-miner -o cat | grep -q .; }
wait_for 60 "the kill in the local journal" local_kill

echo "== on the collector: journalctl -D /var/log/journal/remote TETRAGON_ACTION=SIGKILL"
remote_kill() { journalctl -D /var/log/journal/remote --no-pager TETRAGON_ACTION=SIGKILL TETRAGON_POLICY=th-remote-miner -o cat | grep -q .; }
wait_for 90 "the kill on the collector" remote_kill
entry=$(journalctl -D /var/log/journal/remote --no-pager TETRAGON_ACTION=SIGKILL TETRAGON_POLICY=th-remote-miner -o export -n 1)
# TETRAGON_BINARY is the process that called exec (the shell, at bprm_check);
# the miner's path is the hook's argument, in TETRAGON_JSON.
for field in "TETRAGON_ACTION=SIGKILL" "TETRAGON_POLICY=th-remote-miner" "TETRAGON_BINARY=/" \
        "TETRAGON_EVENT=PROCESS_KPROBE" "TETRAGON_HOOK=security_bprm_check" "TETRAGON_JSON=" "_HOSTNAME="; do
    printf '%s\n' "$entry" | grep -q "^$field" || fail "collector's entry lacks $field: $entry"
done
printf '%s\n' "$entry" | grep '^TETRAGON_JSON=' | cut -d= -f2- | "$repo/.venv/bin/python" -c \
    "import json,sys; e=json.loads(sys.stdin.read()); assert '/tmp/$tag/xmrig' in json.dumps(e['process_kprobe']['args']), e" \
    || fail "TETRAGON_JSON on the collector is not the event's JSON"
echo "collector has the kill with its TETRAGON_* fields:"
printf '%s\n' "$entry" | grep '^TETRAGON_' | grep -v '^TETRAGON_JSON' | sed 's/^/  /'
systemctl stop th-agent
echo "journal remote ok"
