import os

from tetrahost.events.namespaces import HostNamespaces, parse_ns_link, read_ns_inodes
from tetrahost.events.procfs import (
    INVALID_UID, parse_cgroup_v2, parse_cmdline, parse_stat, read_process, scan_processes,
    ticks_to_ns,
)
from tetrahost.events.records import NAMESPACE_KINDS

CLK_TCK = os.sysconf("SC_CLK_TCK")


def test_parse_stat_comm_with_spaces_and_parens():
    # comm "a) (b c" would break a naive split or a split at the first ')'.
    line = b"4242 (a) (b c) R 17 4242 4242 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 98765 0 0\n"
    st = parse_stat(line)
    assert st.comm == b"a) (b c"
    assert st.state == "R"
    assert st.ppid == 17
    assert st.start_ticks == 98765


def test_ticks_to_ns():
    assert ticks_to_ns(250, 100) == 2_500_000_000
    assert ticks_to_ns(1, 1000) == 1_000_000


def test_parse_cmdline_and_cgroup():
    assert parse_cmdline(b"curl\0-s\0a b\0") == [b"curl", b"-s", b"a b"]
    assert parse_cmdline(b"") == []
    # hybrid host: v1 lines first, the unified line is the one that counts
    data = b"12:pids:/system.slice/x.service\n1:name=systemd:/x\n0::/system.slice/nginx.service\n"
    assert parse_cgroup_v2(data) == "/system.slice/nginx.service"
    assert parse_cgroup_v2(b"3:cpu:/\n") == ""


def test_scan_reads_every_field(fake_proc):
    fake_proc.add(1, ppid=0, comm=b"systemd", exe=b"/usr/lib/systemd/systemd",
                  argv=[b"/sbin/init", b"splash"], uids=(0, 0, 0, 0), gids=(0, 0, 0, 0),
                  cap_prm=0x1ffffffffff, cap_eff=0x1ffffffffff, start_ticks=1,
                  loginuid=INVALID_UID, cgroup="0::/init.scope\n")
    fake_proc.add(2, ppid=0, comm=b"kthreadd", exe=None, argv=[], cwd=b"/", cgroup="0::/\n")
    fake_proc.add(777, ppid=1, comm=b"my prog) x", exe=b"/opt/my dir/bin\xff",
                  argv=[b"prog", b"--flag", b"two words", b"\xfe"], cwd=b"/home/u",
                  uids=(1000, 1001, 1002, 1003), gids=(2000, 2001, 2002, 2003),
                  cap_inh=0x4, cap_prm=0x3, cap_eff=0x2, start_ticks=12345,
                  cgroup="0::/system.slice/nginx.service\n")
    (fake_proc.root / "self").symlink_to("777")   # non-numeric entries are not processes
    (fake_proc.root / "meminfo").write_text("MemTotal: 1 kB\n")

    procs = {p.pid: p for p in scan_processes(fake_proc.path)}
    assert sorted(procs) == [1, 2, 777]

    init = procs[1]
    assert init.binary == b"/usr/lib/systemd/systemd"
    assert init.args == [b"splash"]
    assert init.ppid == 0
    assert init.caps.permitted == 0x1ffffffffff
    assert init.auid == INVALID_UID
    assert init.cgroup == "/init.scope"
    assert not init.kernel_thread

    kthread = procs[2]
    assert kthread.kernel_thread
    assert kthread.binary == b"kthreadd"      # no exe: named by comm, as Tetragon
    assert kthread.args == []

    p = procs[777]
    assert p.comm == b"my prog) x"
    assert p.ppid == 1
    assert p.binary == b"/opt/my dir/bin\xff"
    assert p.args == [b"--flag", b"two words", b"\xfe"]
    assert p.cwd == b"/home/u"
    assert (p.creds.uid, p.creds.euid, p.creds.suid, p.creds.fsuid) == (1000, 1001, 1002, 1003)
    assert (p.creds.gid, p.creds.egid, p.creds.sgid, p.creds.fsgid) == (2000, 2001, 2002, 2003)
    assert (p.caps.inheritable, p.caps.permitted, p.caps.effective) == (0x4, 0x3, 0x2)
    assert p.start_ticks == 12345
    assert p.start_ktime == 12345 * 1_000_000_000 // CLK_TCK
    assert p.auid == 1000
    assert p.cgroup == "/system.slice/nginx.service"
    assert p.ns[NAMESPACE_KINDS.index("pid")] == 4026531836
    assert p.ns[NAMESPACE_KINDS.index("net")] == 4026531840
    assert len(p.ns) == 10


def test_vanished_process_is_skipped(fake_proc):
    fake_proc.add(10)
    fake_proc.add(11, write_status=False)          # gone between stat and status
    (fake_proc.root / "12").mkdir()                 # gone before anything could be read
    assert [p.pid for p in scan_processes(fake_proc.path)] == [10]
    assert read_process(11, fake_proc.path) is None
    assert read_process(99, fake_proc.path) is None


def test_missing_loginuid_and_namespace_kinds(fake_proc):
    fake_proc.add(5, loginuid=None, ns={"pid": 4026532000, "net": 4026532001})
    p = read_process(5, fake_proc.path)
    assert p.auid == INVALID_UID
    assert p.ns[NAMESPACE_KINDS.index("pid")] == 4026532000
    assert p.ns[NAMESPACE_KINDS.index("time")] == 0   # kernel without time namespaces


def test_parse_ns_link():
    assert parse_ns_link("pid:[4026531836]") == 4026531836
    assert parse_ns_link("garbage") == 0


def test_host_namespaces(fake_proc, host_ns_inodes):
    fake_proc.add(1, ppid=0)
    fake_proc.add(50, ns=dict(host_ns_inodes, net=4026532999))
    host = HostNamespaces.from_proc(fake_proc.path)
    assert host.inode("mnt") == host_ns_inodes["mnt"]
    inodes = read_ns_inodes(fake_proc.path, 50)
    flags = dict(zip(NAMESPACE_KINDS, host.is_host_all(inodes)))
    assert flags["net"] is False
    assert flags["mnt"] is True and flags["pid"] is True
    assert host.is_host("net", 4026532999) is False
    assert host.is_host("uts", host_ns_inodes["uts"]) is True
    # unknown host namespaces never claim "host"
    assert HostNamespaces.unknown().is_host("uts", 0) is False
