import base64
import os

import pytest

from tetrahost.events.proccache import ProcessCache, make_exec_id
from tetrahost.events.records import Caps, Creds, ExecRecord, ExitRecord, ForkRecord

NODE = "host1"
NS = (11, 12, 13, 14, 15, 16, 17, 18, 19, 20)


def creds(uid=1000):
    return Creds(uid, uid, uid, uid, uid, uid, uid, uid)


def exec_rec(pid, ppid, ktime, binary=b"/usr/bin/true", args=(), cwd=b"/home/u", **kw):
    fields = dict(ktime=ktime, pid=pid, tid=pid, ppid=ppid, auid=1000, parent_ktime=0,
                  cgroup_id=0, creds=creds(), caps=Caps(0, 0, 0), ns=NS, binary=binary,
                  args=list(args), cwd=cwd)
    fields.update(kw)
    return ExecRecord(**fields)


def fork_rec(pid, ppid, ktime):
    return ForkRecord(ktime=ktime, pid=pid, tid=pid, ppid=ppid, parent_ktime=0)


def exit_rec(pid, ktime, code=0):
    return ExitRecord(ktime=ktime, pid=pid, tid=pid, exit_code=code, start_ktime=0)


def seeded_cache(fake_proc, **kw):
    fake_proc.add(1, ppid=0, comm=b"systemd", exe=b"/usr/lib/systemd/systemd",
                  argv=[b"/sbin/init"], uids=(0,) * 4, gids=(0,) * 4, start_ticks=1,
                  cgroup="0::/init.scope\n")
    fake_proc.add(100, ppid=1, comm=b"bash", exe=b"/usr/bin/bash", argv=[b"-bash"],
                  cwd=b"/home/u", start_ticks=500)
    cache = ProcessCache(NODE, **kw)
    assert cache.load_procfs(fake_proc.path) == 2
    return cache


def test_exec_id_is_base64_of_node_ktime_pid():
    exec_id = make_exec_id("host1", 1234567, 42)
    assert base64.b64decode(exec_id) == b"host1:1234567:42"
    assert exec_id == "aG9zdDE6MTIzNDU2Nzo0Mg=="


def test_procfs_entries_flagged_and_linked(fake_proc):
    cache = seeded_cache(fake_proc)
    bash = cache.get_pid(100)
    init = cache.get_pid(1)
    assert bash.flags == "procFS"
    assert init.flags == "procFS rootcwd"
    assert bash.parent_exec_id == init.exec_id
    assert init.parent_exec_id is None
    assert bash.binary == b"/usr/bin/bash"
    assert init.workload.unit == "init.scope"
    ticks_ns = 500 * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert base64.b64decode(bash.exec_id).decode() == f"{NODE}:{ticks_ns}:100"


def test_fork_exec_exit_sequence(fake_proc):
    cache = seeded_cache(fake_proc)
    bash = cache.get_pid(100)

    assert cache.handle(fork_rec(200, 100, 10_000)) is None        # forks make no event
    clone = cache.get_pid(200)
    assert clone.flags == "clone"
    assert clone.binary == bash.binary and clone.args == bash.args and clone.cwd == bash.cwd
    assert clone.ns == bash.ns
    assert clone.parent_exec_id == bash.exec_id
    assert base64.b64decode(clone.exec_id) == b"host1:10000:200"

    ev = cache.handle(exec_rec(200, 100, 20_000, binary=b"/usr/bin/curl",
                               args=[b"https://example.org"]))
    assert ev.kind == "exec"
    assert ev.process.binary == b"/usr/bin/curl"
    assert ev.process.flags == "execve"
    assert ev.parent is bash
    assert ev.process.parent_exec_id == bash.exec_id
    assert cache.get_pid(200) is ev.process
    assert cache.get_exec_id(clone.exec_id) is None                 # pre-exec image released

    ev2 = cache.handle(exit_rec(200, 30_000, code=9))               # killed by SIGKILL
    assert ev2.kind == "exit"
    assert ev2.process is ev.process
    assert ev2.parent is bash
    assert (ev2.signal, ev2.status) == (9, 0)
    assert cache.get_pid(200) is None
    assert len(cache) == 2
    assert cache.stats.parent_missing == 0


def test_exit_status(fake_proc):
    cache = seeded_cache(fake_proc)
    cache.handle(exec_rec(300, 100, 1_000))
    ev = cache.handle(exit_rec(300, 2_000, code=3 << 8))
    assert (ev.signal, ev.status) == (0, 3)


def test_parent_still_rendered_after_it_exited(fake_proc):
    cache = seeded_cache(fake_proc)
    parent = cache.handle(exec_rec(400, 100, 1_000, binary=b"/usr/bin/make")).process
    child = cache.handle(exec_rec(401, 400, 2_000, binary=b"/usr/bin/cc")).process
    assert cache.handle(exit_rec(400, 3_000)).parent.pid == 100
    assert cache.get_pid(400) is None
    # the child's exit still names its original parent
    ev = cache.handle(exit_rec(401, 4_000))
    assert ev.parent is parent
    # and once the child is gone, so is the parent
    assert cache.get_exec_id(parent.exec_id) is None
    assert cache.get_exec_id(child.exec_id) is None
    assert len(cache) == 2


def test_unknown_parent_still_emits_and_counts():
    cache = ProcessCache(NODE)
    ev = cache.handle(exec_rec(500, 499, 1_000))
    assert ev.parent is None
    assert ev.process.parent_exec_id is None
    assert cache.stats.parent_missing == 1
    ev = cache.handle(exit_rec(500, 2_000))
    assert ev.parent is None
    assert cache.stats.parent_missing == 2
    # ppid 0 (no parent by design) is not a miss
    cache.handle(exec_rec(1, 0, 3_000))
    assert cache.stats.parent_missing == 2


def test_exit_and_fork_of_unknown_pids():
    cache = ProcessCache(NODE)
    assert cache.handle(exit_rec(77, 1_000)) is None
    assert cache.stats.exit_unknown == 1
    assert cache.handle(fork_rec(78, 77, 1_000)) is None
    assert cache.stats.fork_parent_missing == 1
    assert cache.get_pid(78) is None


def test_pid_reuse_replaces_entry(fake_proc):
    cache = seeded_cache(fake_proc)
    first = cache.handle(exec_rec(600, 100, 1_000, binary=b"/usr/bin/a")).process
    # the exit of 600 was lost; the pid comes back with a fork
    cache.handle(fork_rec(600, 1, 5_000))
    second = cache.get_pid(600)
    assert second is not first
    assert second.binary == b"/usr/lib/systemd/systemd"
    assert cache.stats.stale_replaced == 1
    assert cache.get_exec_id(first.exec_id) is None
    # and an exec on the same pid replaces it again
    third = cache.handle(exec_rec(600, 1, 6_000, binary=b"/usr/bin/b")).process
    assert cache.get_pid(600) is third
    ev = cache.handle(exit_rec(600, 7_000))
    assert ev.process is third


def test_clone_keeps_truncation_flags(fake_proc):
    cache = seeded_cache(fake_proc)
    cache.handle(exec_rec(700, 100, 1_000, truncated_args=True, cwd=b"/"))
    assert cache.get_pid(700).flags == "execve rootcwd truncArgs"
    cache.handle(fork_rec(701, 700, 2_000))
    assert cache.get_pid(701).flags == "clone rootcwd truncArgs"


def test_exec_record_details():
    cache = ProcessCache(NODE, cgroup_path_for={55: "/system.slice/nginx.service"}.get)
    ev = cache.handle(exec_rec(800, 1, 1_000, cgroup_id=55, auid_unknown=True,
                               truncated_path=True, args_error=True))
    p = ev.process
    assert p.cgroup == "/system.slice/nginx.service"
    assert p.workload.unit == "nginx.service"
    assert p.auid is None
    assert p.flags == "execve truncFilename errorArgs"


def test_memory_is_bounded_and_evictions_counted():
    cache = ProcessCache(NODE, max_entries=50)
    cache.handle(exec_rec(1, 0, 1))
    for i in range(2, 500):
        cache.handle(exec_rec(i, 1, i))
        assert len(cache) <= 50
    assert cache.stats.evictions == 499 - 50
    # the newest survive
    assert cache.get_pid(499) is not None
    assert cache.get_pid(2) is None


def test_eviction_prefers_exited_entries_kept_for_children():
    cache = ProcessCache(NODE, max_entries=10)
    for pid in range(1, 6):                       # parents 1..5, each with one child
        cache.handle(exec_rec(pid, 0, pid))
        cache.handle(exec_rec(pid + 100, pid, pid + 100))
        cache.handle(exit_rec(pid, 1000 + pid))   # parent exits, kept for its child
    assert len(cache) == 10
    live_before = [cache.get_pid(p + 100) for p in range(1, 6)]
    cache.handle(exec_rec(900, 0, 5_000))
    # one retained (exited) parent went, no live process did
    assert cache.stats.evictions == 1
    assert all(cache.get_pid(e.pid) is e for e in live_before)
    assert cache.get_exec_id(make_exec_id(NODE, 1, 1)) is None
    # the child of the evicted parent still exits cleanly, without parent
    ev = cache.handle(exit_rec(101, 6_000))
    assert ev.parent is None
    ev = cache.handle(exit_rec(102, 6_001))
    assert ev.parent is not None and ev.parent.pid == 2


def test_handle_rejects_foreign_records():
    with pytest.raises(TypeError):
        ProcessCache(NODE).handle(object())


def test_a_clone_is_its_parents_image_at_the_fork_even_when_made_later(fake_proc):
    # The entry of a fork is made when asked for; by then the parent may have
    # exec'd another binary and exited: the clone still is what it forked from.
    cache = seeded_cache(fake_proc)
    make = cache.handle(exec_rec(400, 100, 1_000, binary=b"/usr/bin/make")).process
    cache.handle(fork_rec(401, 400, 2_000))
    cache.handle(exec_rec(400, 100, 3_000, binary=b"/usr/bin/cc"))     # the parent's next image
    cache.handle(exit_rec(400, 4_000))
    assert cache.get_exec_id(make.exec_id) is make                      # held by the waiting fork
    ev = cache.handle(exit_rec(401, 5_000))                             # the clone's exit: made now
    assert ev.process.binary == b"/usr/bin/make" and ev.process.flags == "clone"
    assert ev.parent is make and base64.b64decode(ev.process.exec_id) == b"host1:2000:401"
    assert cache.get_exec_id(make.exec_id) is None and len(cache) == 2  # both released after the exit


def test_a_clone_that_execs_at_once_is_never_made_and_holds_nothing(fake_proc):
    cache = seeded_cache(fake_proc)
    parent = cache.handle(exec_rec(500, 100, 1_000, binary=b"/usr/bin/bash")).process
    cache.handle(fork_rec(501, 500, 2_000))
    assert len(cache) == 4 and parent.child_refs == 1                   # the waiting fork counts, holds
    ev = cache.handle(exec_rec(501, 500, 3_000, binary=b"/usr/bin/true"))
    assert ev.parent is parent and ev.process.flags == "execve"
    assert cache.get_exec_id(make_exec_id(NODE, 2_000, 501)) is None    # no clone entry was made
    assert parent.child_refs == 1 and len(cache) == 4                   # the exec's hold, not the fork's too
    cache.handle(exit_rec(500, 3_500))                                  # parent gone, kept for its child
    assert cache.handle(exit_rec(501, 4_000)).parent is parent
    assert cache.get_exec_id(parent.exec_id) is None and len(cache) == 2


def test_a_clone_asked_for_by_its_own_fork_or_a_hook_event(fake_proc):
    cache = seeded_cache(fake_proc)
    cache.handle(fork_rec(600, 100, 1_000))                             # bash -> subshell
    cache.handle(fork_rec(601, 600, 2_000))                             # subshell -> child
    child = cache.get_pid(601)                                          # e.g. a policy event of it
    sub = cache.get_pid(600)
    assert sub.flags == "clone" and child.parent_exec_id == sub.exec_id
    assert sub.parent_exec_id == cache.get_pid(100).exec_id
    assert cache.get_pid(601) is child                                  # made once
    assert {e.pid for e in cache.running()} == {1, 100, 600, 601}


def test_waiting_forks_are_bounded(fake_proc, monkeypatch):
    from tetrahost.events import proccache
    monkeypatch.setattr(proccache, "MAX_PENDING_FORKS", 3)
    cache = seeded_cache(fake_proc)
    for pid in range(700, 706):
        cache.handle(fork_rec(pid, 100, pid))
    assert len(cache._forks) == 3 and len(cache) == 2 + 6
    assert [e.pid for e in cache.running() if e.flags == "clone"] == list(range(700, 706))
    assert cache.get_pid(100).child_refs == 6


def test_a_fork_on_a_pid_still_taken_replaces_it(fake_proc):
    cache = seeded_cache(fake_proc)
    cache.handle(fork_rec(800, 100, 1_000))
    cache.handle(fork_rec(800, 1, 2_000))                               # the first one's exit was lost
    assert cache.stats.stale_replaced == 1
    assert cache.get_pid(800).binary == b"/usr/lib/systemd/systemd"
    assert cache.get_pid(100).child_refs == 0
