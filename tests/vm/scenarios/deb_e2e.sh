#!/bin/bash
# Scenario for `tests/vm/run.py --systemd`: the operator's story with the
# built .deb in a real systemd guest (Debian's 6.1 kernel, systemd PID 1):
# apt install -> service active and ready -> an enforcing policy dropped into
# /etc/tetragon/policies.d kills /tmp/xmrig -> the Sigkill event in the journal
# with its fields, tetra status/getevents, metrics moved -> restart ->
# a miner run in a loop across `systemctl restart` and an upgrade to a new
# build (never runs, one kill event per attempt) -> systemctl stop leaves
# nothing -> reinstall keeps local config and policies -> apt remove leaves no
# BPF program behind -> purge removes the configuration.
#
# Driven by tests/packaging/e2e_systemd.sh, which builds the .deb and puts it
# in the results directory as tetrahost.deb, and the upgrade to a new build as
# tetrahost-next.deb.
set -euo pipefail

t0=$(cut -d' ' -f1 /proc/uptime)
step() { echo "== [$(awk -v t0="$t0" '{printf "%6.1f", $1 - t0}' /proc/uptime) s] $*"; }
# fail: a check failed, go on with the next ones (one boot shows every
# problem); fatal: nothing after this can work.  Exit status 1 if any failed.
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
fatal() { echo "FATAL: $*"; journalctl -u tetrahost --no-pager -n 40 -o cat | grep -v '^[🚀💥]' || true; exit 1; }
trap 'echo "== $failures check(s) failed"; [ $failures -eq 0 ] || exit 1' EXIT
# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds.
wait_for() {
    local limit=$1 what=$2; shift 2
    local end=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || { fail "timed out after ${limit}s waiting for: $what"; return 1; }
        sleep 0.5
    done
}

deb=${TETRAHOST_VM_RESULTS:-/nonexistent}/tetrahost.deb
[ -f "$deb" ] || fatal "no $deb (run tests/packaging/e2e_systemd.sh)"

# --- a writable root for dpkg ----------------------------------------------
# The guest root is the host's, read-only over 9p.  dpkg and apt need /usr,
# /etc and /var writable, and the test needs /tmp: put tmpfs-backed overlays
# on them.  Nothing reaches the host; everything is gone at power-off.
step "overlays on /usr /etc /var, tmpfs on /tmp"
mkdir -p /run/e2e && mount -t tmpfs -o size=1G,mode=0700 e2e /run/e2e
for d in usr etc var; do
    mkdir -p /run/e2e/$d/up /run/e2e/$d/work
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=/run/e2e/$d/up,workdir=/run/e2e/$d/work" "/$d"
done
mount -t tmpfs -o mode=1777 tmp /tmp
# A host that ran the agent by hand may have its own /etc/tetragon: start
# from what a fresh machine has (this only changes the overlay).
dpkg --purge tetrahost >/dev/null 2>&1 || true
# The host image is a Docker one: its policy-rc.d forbids maintainer scripts
# to start services.  A real Debian host has none; neither has this guest.
rm -f /usr/sbin/policy-rc.d
# man-db's dpkg trigger reindexes every man page of the host over 9p under the
# emulated CPU (tens of seconds); not what this test is about.
rm -f /var/lib/man-db/auto-update
rm -rf /etc/tetragon /var/log/tetragon /var/lib/tetrahost

# --- install ------------------------------------------------------------------
step "apt-get install $deb"
# Dependencies resolve from the host's installed packages (no network here).
# The package's postinst enables and starts the service (Debian's default).
cp "$deb" /tmp/tetrahost.deb
DEBIAN_FRONTEND=noninteractive apt-get install -y -o Dpkg::Use-Pty=0 /tmp/tetrahost.deb >/tmp/install.log 2>&1 \
    || { cat /tmp/install.log; fatal "apt-get install failed"; }
grep -E '^(Setting up|Created symlink|The following NEW)' /tmp/install.log || true
command -v tetrahost tetra >/dev/null || fail "tetrahost/tetra not on PATH"
head -n1 "$(command -v tetrahost)" | grep -qx '#!/usr/bin/python3' || fail "tetrahost does not run with /usr/bin/python3"
[ "$(systemctl is-enabled tetrahost)" = enabled ] || fail "tetrahost.service is not enabled"

step "systemctl start tetrahost"
# The postinst started it already (Debian's default for services); starting an
# active unit is a no-op that still fails if the start job failed.
systemctl start tetrahost || fatal "systemctl start failed"
# Type=notify: active means READY=1 was sent (sensors attached, policies loaded).
[ "$(systemctl is-active tetrahost)" = active ] || fatal "not active after start"
systemctl --no-pager status tetrahost | head -n 12 || true
pid=$(systemctl show -p MainPID --value tetrahost)
echo "main pid $pid, $(grep CapBnd /proc/$pid/status)"
echo "status: $(systemctl show -p StatusText --value tetrahost)"
tetra status || fail "tetra status failed"
tetra tracingpolicy list

# --- enforcement: the operator enables the cryptominer policy ------------------
step "copy block-cryptominers.yaml into /etc/tetragon/policies.d"
tetra getevents -o compact --policy-names block-cryptominers </dev/null >/tmp/getevents.txt 2>&1 &
getevents=$!
cp /usr/share/doc/tetrahost/examples/block-cryptominers.yaml /etc/tetragon/policies.d/
policy_enabled() { tetra tracingpolicy list | grep -Eq "^block-cryptominers .*state=(enforcing|monitoring|enabled) "; }
wait_for 60 "block-cryptominers enabled" policy_enabled || true
tetra tracingpolicy list

step "run /tmp/xmrig"
cp /bin/sleep /tmp/xmrig
set +e
/tmp/xmrig 5
rc=$?
set -e
[ "$rc" -eq 137 ] || fail "/tmp/xmrig exited with $rc, expected 137 (SIGKILL)"
echo "/tmp/xmrig was killed (exit $rc)"

step "journalctl -u tetrahost TETRAGON_ACTION=SIGKILL"
# The event's process is the caller of execve (bash): the kill happens in
# security_bprm_check, before /tmp/xmrig replaces it.
in_journal() { journalctl -u tetrahost --no-pager -o verbose TETRAGON_ACTION=SIGKILL TETRAGON_POLICY=block-cryptominers | grep -q TETRAGON_HOOK=security_bprm_check; }
wait_for 20 "the Sigkill event in the journal" in_journal || true
journalctl -u tetrahost --no-pager -o verbose TETRAGON_ACTION=SIGKILL | grep -E '^\s+(MESSAGE|PRIORITY|TETRAGON_(EVENT|POLICY|HOOK|ACTION|BINARY|PID|UNIT))=' | head -n 10 || true

step "tetra getevents"
got_event() { grep -q "security_bprm_check.*SIGKILL" /tmp/getevents.txt; }
wait_for 20 "tetra getevents shows the Sigkill event" got_event || true
kill "$getevents" 2>/dev/null || true
cat /tmp/getevents.txt

step "metrics"
curl -fsS http://localhost:2112/metrics >/tmp/metrics.txt || fail "curl /metrics failed"
grep -E '^tetragon_policy_events_total\{.*block-cryptominers' /tmp/metrics.txt || fail "no policy event counter for block-cryptominers"
value=$(grep -E '^tetragon_policy_events_total\{.*block-cryptominers' /tmp/metrics.txt | awk '{s += $2} END {print s + 0}' || true)
awk -v v="$value" 'BEGIN {exit !(v >= 1)}' || fail "block-cryptominers counter is $value"
grep -E '^tetragon_process_exec_total' /tmp/metrics.txt | head -n 3 || true
awk '/^tetragon_events_total/ {s += $2} END {if (s < 1) exit 1; print "tetragon_events_total sum", s}' /tmp/metrics.txt \
    || fail "tetragon_events_total did not move"

# --- restart ----------------------------------------------------------------------
step "systemctl restart tetrahost"
systemctl restart tetrahost || fail "restart failed"
[ "$(systemctl is-active tetrahost)" = active ] || fail "not active after restart"
[ "$(systemctl show -p MainPID --value tetrahost)" != "$pid" ] || fail "restart kept the old process"
wait_for 60 "block-cryptominers enabled after restart" policy_enabled || true
set +e; /tmp/xmrig 5; rc=$?; set -e
[ "$rc" -eq 137 ] || fail "after restart /tmp/xmrig exited with $rc, expected 137"
echo "after restart /tmp/xmrig was killed again"

# --- enforcement that never lapses: restart and upgrade under a miner loop ------------
step "a miner loop across systemctl restart and an upgrade to a new build"
next_deb=${TETRAHOST_VM_RESULTS:-/nonexistent}/tetrahost-next.deb
[ -f "$next_deb" ] || fatal "no $next_deb (run tests/packaging/e2e_systemd.sh)"
cp "$next_deb" /tmp/tetrahost-next.deb
cursor=$(journalctl --show-cursor -n 0 -q | sed -n 's/^-- cursor: //p')
# One line per attempt in attempts.txt ("PID RC"): RC 0 means the miner ran.
# And one open of /etc/shadow per round (opens.txt: its PID), which the
# monitor-sensitive-files policy (active by default) reports: every open once.
rm -f /tmp/loop.stop /tmp/attempts.txt /tmp/opens.txt
(
    while [ ! -e /tmp/loop.stop ]; do
        sh -c 'exec /tmp/xmrig 0' & child=$!
        rc=0; wait "$child" || rc=$?        # (set -e holds in this subshell too)
        echo "$child $rc" >> /tmp/attempts.txt
        sh -c 'exec cat /etc/shadow' >/dev/null & reader=$!
        wait "$reader" || true
        echo "$reader" >> /tmp/opens.txt
    done
) 2>/dev/null &     # (the shell's "Killed" line for each attempt)
loop=$!
attempts() { [ -f /tmp/attempts.txt ] && wc -l < /tmp/attempts.txt || echo 0; }
more_attempts() {  # N: wait until N more attempts were made
    local want=$(( $(attempts) + $1 )) end=$(( $(date +%s) + 120 ))
    while [ "$(attempts)" -lt "$want" ]; do
        [ "$(date +%s)" -lt "$end" ] || { fail "the miner loop stalled"; return 1; }
        sleep 0.2
    done
}
more_attempts 10
systemctl restart tetrahost || fail "restart under the loop failed"
more_attempts 10
DEBIAN_FRONTEND=noninteractive dpkg -i --force-confdef --force-confold /tmp/tetrahost-next.deb >/tmp/upgrade.log 2>&1 \
    || { cat /tmp/upgrade.log; fail "upgrade to the next build failed"; }
dpkg-query -W -f='${Version}\n' tetrahost | grep -q '+next1$' || fail "the upgrade did not install the next version"
[ "$(systemctl is-active tetrahost)" = active ] || fail "not active after the upgrade"
more_attempts 10
touch /tmp/loop.stop; wait "$loop"
n=$(attempts)
ran=$(awk '$2 == 0' /tmp/attempts.txt | wc -l)
[ "$ran" -eq 0 ] || fail "the miner ran $ran time(s) of $n across restart and upgrade"
echo "$n attempts across restart and upgrade, $ran ran; exit codes: $(awk '{print $2}' /tmp/attempts.txt | sort | uniq -c | tr -s ' ' | paste -sd,)"
# Every attempt's kill is reported once: by the agent that saw it, or by the
# next one from the pinned ring buffer (the replaced generation's, after the
# upgrade).  A kill in no journal entry fails unless a loss was counted for
# it: in the kernel (ring buffer full), as a record read but not exported, or
# by the journald exporter.  Stopped agents' counts are in their stop lines
# ("tetrahost stopped: ... lost: N (what n, ...)"), the running one's in its
# metrics.
# The kills are matched to the attempts by pid over the whole boot, not after
# $cursor: the first attempt's kill entry was twice ordered before the cursor
# taken before the loop began (in the journal with its policy and pid, yet
# not after --after-cursor).  The loop's pids are this boot's only ones.
kills() { journalctl -b --no-pager -o json TETRAGON_ACTION=SIGKILL TETRAGON_POLICY=block-cryptominers; }
all_reported() { [ "$(kills | wc -l)" -ge "$((n + 2))" ]; }     # (+ the 2 kills before the loop)
end=$(( $(date +%s) + 60 ))                  # (not wait_for: a shortfall is measured below)
until all_reported || [ "$(date +%s)" -ge "$end" ]; do sleep 0.5; done
journalctl --after-cursor="$cursor" --no-pager -o cat SYSLOG_IDENTIFIER=tetrahost \
    | grep '^tetrahost stopped:' > /tmp/stop-lines.txt || true
curl -fsS http://localhost:2112/metrics > /tmp/metrics-loop.txt || fail "curl /metrics failed"
# One event per attempt (argv[1]: a file of "PID ..." lines; the journal's
# entries on stdin), or a loss counted for each one missing.
cat > /tmp/once_each.py <<'EOF'
import collections, json, re, sys
attempts = {line.split()[0] for line in open(sys.argv[1])}
label = sys.argv[2]
pids = collections.Counter(json.loads(l).get("TETRAGON_PID") for l in sys.stdin if l.strip())
pids = collections.Counter({p: c for p, c in pids.items() if p in attempts})   # the loop pids only
dups = {p: c for p, c in pids.items() if c > 1}
missing = attempts - set(pids)
# Losses that can be an event missing from the journal (not those of other exporters).
relevant = ("kernel ", "dropped ", "journald ")
counted = 0
for line in open("/tmp/stop-lines.txt"):
    print("stopped agent:", line.split("; ")[-1].strip())
    m = re.search(r"lost: \d+ \((.*)\)", line)
    for part in (m.group(1).split(", ") if m else ()):
        what, _, n = part.rpartition(" ")
        counted += int(n) if what.startswith(relevant) else 0
for line in open("/tmp/metrics-loop.txt"):
    if re.match(r"(tetragon_missed_events_total|tetrahost_records_dropped_total)[{ ]|tetrahost_export_lost_total\{exporter=\"journald\"", line):
        print("running agent:", line.strip())
        counted += int(float(line.split()[-1]))
print(f"{label} events: {sum(pids.values())} for {len(attempts)} attempts; duplicated: {dups or 0}; "
      f"missing: {len(missing)}; losses counted: {counted}")
if missing:
    import subprocess
    print("missing pids:", " ".join(sorted(missing, key=int)[:20]))
    for pid in sorted(missing, key=int)[:5]:       # what the journal has of them
        out = subprocess.run(["journalctl", "--no-pager", "-o", "json", f"TETRAGON_PID={pid}"],
                             capture_output=True, text=True).stdout
        for e in map(json.loads, filter(None, out.splitlines())):
            what = [str(e.get(k)) for k in ("TETRAGON_EVENT", "TETRAGON_POLICY", "TETRAGON_ACTION", "MESSAGE")]
            print(f"  pid {pid}:", " ".join(what)[:160])
sys.exit(1 if dups or len(missing) > counted else 0)
EOF
kills | /usr/bin/python3 /tmp/once_each.py /tmp/attempts.txt kill \
    || fail "kill events are not one per attempt, or kills are missing with no loss counted (see above)"
opens() { journalctl -b --no-pager -o json TETRAGON_POLICY=monitor-sensitive-files; }
end=$(( $(date +%s) + 60 ))
until [ "$(opens | wc -l)" -ge "$(wc -l < /tmp/opens.txt)" ] || [ "$(date +%s)" -ge "$end" ]; do sleep 0.5; done
opens | /usr/bin/python3 /tmp/once_each.py /tmp/opens.txt "/etc/shadow open" \
    || fail "/etc/shadow open events are not one per open, or some are missing with no loss counted (see above)"

step "systemctl stop: nothing of ours left in the kernel"
systemctl stop tetrahost || fail "stop failed"
leftover=$(bpftool prog list 2>/dev/null | grep -E 'name (th_|on_exec|on_fork|on_exit)' || true)
[ -z "$leftover" ] || fail "BPF programs left after stop: $leftover"
pins=$(find /sys/fs/bpf -mindepth 1 2>/dev/null | grep -i tetra || true)
[ -z "$pins" ] || fail "BPF pins left after stop: $pins"
set +e; /tmp/xmrig 0; rc=$?; set -e
[ "$rc" -eq 0 ] || fail "after stop the miner exited $rc: something still enforces"
systemctl start tetrahost || fatal "start after stop failed"
wait_for 60 "block-cryptominers enabled after start" policy_enabled || true

# --- upgrade path: reinstalling keeps local configuration and policies -------------
step "local edits, then reinstall (the upgrade path of dpkg)"
echo '# local edit' >> /etc/tetragon/tetrahost.toml
printf '# local edit\n' >> /etc/tetragon/policies.d/monitor-sensitive-files.yaml
DEBIAN_FRONTEND=noninteractive dpkg -i --force-confdef --force-confold /tmp/tetrahost.deb >/tmp/reinstall.log 2>&1 \
    || { cat /tmp/reinstall.log; fail "reinstall failed"; }
grep -qx '# local edit' /etc/tetragon/tetrahost.toml || fail "reinstall lost the local config edit"
grep -qx '# local edit' /etc/tetragon/policies.d/monitor-sensitive-files.yaml || fail "reinstall lost the policy edit"
[ -f /etc/tetragon/policies.d/block-cryptominers.yaml ] || fail "reinstall removed the operator's policy"
[ "$(systemctl is-active tetrahost)" = active ] || fail "not active after reinstall"
echo "local config, policy edit and added policy kept; service active"

# --- remove and purge ------------------------------------------------------------------
step "apt-get remove tetrahost"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -o Dpkg::Use-Pty=0 tetrahost >/tmp/remove.log 2>&1 \
    || { cat /tmp/remove.log; fail "apt-get remove failed"; }
systemctl is-active -q tetrahost && fail "still active after remove"
leftover=$(bpftool prog list 2>/dev/null | grep -E 'name (th_|on_exec|on_fork|on_exit)' || true)
[ -z "$leftover" ] || fail "BPF programs left after remove: $leftover"
pins=$(find /sys/fs/bpf -mindepth 1 2>/dev/null | grep -i tetra || true)
[ -z "$pins" ] || fail "BPF pins left after remove: $pins"
echo "bpftool prog list: $(bpftool prog list 2>/dev/null | grep -c '^[0-9]') programs, none of tetrahost; no pins"
[ -f /etc/tetragon/tetrahost.toml ] || fail "remove (not purge) deleted the configuration"

step "apt-get purge tetrahost"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -o Dpkg::Use-Pty=0 tetrahost >/tmp/purge.log 2>&1 \
    || { cat /tmp/purge.log; fail "apt-get purge failed"; }
[ ! -e /etc/tetragon/tetrahost.toml ] || fail "purge left /etc/tetragon/tetrahost.toml"
[ ! -e /etc/tetragon/policies.d/monitor-sensitive-files.yaml ] || fail "purge left the shipped policies"
[ ! -e /var/lib/tetrahost ] || fail "purge left /var/lib/tetrahost"
echo "after purge, left in /etc/tetragon (the operator's own files): $(find /etc/tetragon -type f 2>/dev/null | tr '\n' ' ')"
step "deb e2e done"
