"""`resolve:` / `btfType:` on hook arguments: the walk over this machine's
real kernel BTF (/sys/kernel/btf/vmlinux), the policy errors it gives
(file:line: field: message), and what the compiler puts in the hook config."""
from __future__ import annotations

import pytest

from tetrahost import btf as B
from tetrahost.bpf.native import lib
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy import load_path, load_text
from tetrahost.policy.compile import KernelUnreadable, compile_hook
from tetrahost.policy.resolve import MAX_LOADS, ResolveError, walk

from policytest_helpers import CONFORMANCE, errors_of, policy_text

pytestmark = pytest.mark.skipif(not B.os.path.exists(B.VMLINUX), reason="this kernel has no BTF")


@pytest.fixture(scope="module")
def btf() -> B.Btf:
    return B.vmlinux()


def offset(btf: B.Btf, struct: str, member: str) -> int:
    """A member's byte offset, read from the struct's member list (and its
    anonymous members': struct file's f_path is in an anonymous union on 6.18)."""
    def search(t: B.Type):
        for m in btf.members(t):
            if m.name == member:
                return m.bit_offset
            inner = btf.strip(m.type_id)
            if not m.name and inner.kind in (B.STRUCT, B.UNION):
                found = search(inner)
                if found is not None:
                    return m.bit_offset + found
        return None
    bits = search(btf.find(struct, B.STRUCT))
    assert bits is not None, f"struct {struct} has no {member}"
    return bits // 8


def ptr_to(btf: B.Btf, struct: str) -> int:
    return btf.find(struct, B.STRUCT).id


def test_parent_comm_from_a_task(btf):
    r = walk(btf, ["real_parent", "comm"], "string", target_id=ptr_to(btf, "task_struct"))
    assert r.loads == (offset(btf, "task_struct", "real_parent"),)
    assert (r.last_offset, r.last_size) == (offset(btf, "task_struct", "comm"), 0)
    assert r.reached == "char[16]"


def test_dentry_name_from_a_file_through_embedded_structs(btf):
    r = walk(btf, ["f_path", "dentry", "d_name", "name"], "string", target_id=ptr_to(btf, "file"))
    # f_path is embedded: its offset adds to dentry's; d_name too, then name is a pointer to load
    assert r.loads == (offset(btf, "file", "f_path") + offset(btf, "path", "dentry"),
                       offset(btf, "dentry", "d_name") + offset(btf, "qstr", "name"))
    assert (r.last_offset, r.last_size) == (0, 0)


def test_member_inside_anonymous_unions(btf):
    skb = btf.find("sk_buff", B.STRUCT)
    assert "dev" not in [m.name for m in btf.members(skb)]      # only inside anonymous members
    r = walk(btf, ["dev", "name"], "string", target_id=skb.id)
    assert len(r.loads) == 1 and r.reached.startswith("char[")


def test_pointer_to_pointer_and_integer_member(btf):
    """Tetragon's example: security_inode_copy_up's `struct cred **new`, user.uid.val."""
    proto = btf.type(btf.find("security_inode_copy_up", B.FUNC).ref)
    _, cred_pp = btf.params(proto)[1]
    r = walk(btf, ["user", "uid", "val"], "int32", type_id=cred_pp)
    assert r.loads == (0, offset(btf, "cred", "user"))
    assert r.last_offset == offset(btf, "user_struct", "uid")
    assert (r.last_size, r.last_signed) == (4, False)          # uid_t


def test_struct_types_read_by_existing_readers(btf):
    bprm = ptr_to(btf, "linux_binprm")
    f = walk(btf, ["file"], "file", target_id=bprm)
    assert f.loads == (offset(btf, "linux_binprm", "file"),) and f.last_offset == 0
    p = walk(btf, ["file", "f_path"], "path", target_id=bprm)    # embedded: its address
    assert p.loads == f.loads and p.last_offset == offset(btf, "file", "f_path") and p.last_size == 0


@pytest.mark.parametrize("path, type_, message", [
    ("mm.foo", "string", 'struct mm_struct has no member "foo" (at "mm.foo")'),
    ("comm.x", "string", 'char[16] is not a struct or union: no member "x" (at "comm.x")'),
    ("pid", "string", '"pid" is pid_t: a string argument reads a char array or a char pointer'),
    ("comm", "int32", '"comm" is char[16]: a int32 argument reads an integer'),
    ("real_parent", "file", '"real_parent" is struct task_struct *: a file argument reads a struct file'),
    ("in_execve", "uint32", "bit field"),
    ("real_parent." * (MAX_LOADS + 1) + "comm", "string", f"at most {MAX_LOADS}"),
])
def test_walk_errors(btf, path, type_, message):
    with pytest.raises(ResolveError) as exc:
        walk(btf, path.split("."), type_, target_id=ptr_to(btf, "task_struct"))
    assert message in str(exc.value)


def test_step_limit_is_the_kernel_sides():
    assert MAX_LOADS == lib.TH_MAX_RESOLVE_STEPS


KPROBE = """
kprobes:
- call: security_bprm_check
  syscall: false
  args:
  - index: 0
    type: string
    resolve: "{path}"
"""


def test_unknown_member_is_a_file_line_error():
    assert errors_of(KPROBE.format(path="mm.foo")) == [
        'p.yaml:12: spec.kprobes[0].args[0].resolve: struct mm_struct has no member "foo" (at "mm.foo")']


@pytest.mark.parametrize("body, expected", [
    ("""
     kprobes:
     - call: sys_openat
       syscall: true
       args:
       - index: 1
         type: string
         resolve: "x"
     """, "p.yaml:12: spec.kprobes[0].args[0].resolve: resolve follows kernel structures, and a syscall's"),
    ("""
     tracepoints:
     - subsystem: sched
       event: sched_process_exec
       raw: true
       args:
       - index: 0
         type: string
         btfType: task_struct
     """, "p.yaml:13: spec.tracepoints[0].args[0].btfType: btfType names the struct a resolve path starts from"),
    ("""
     tracepoints:
     - subsystem: sched
       event: sched_process_exec
       raw: true
       args:
       - index: 1
         type: int
         btfType: no_such_struct_here
         resolve: pid
     """, "p.yaml:13: spec.tracepoints[0].args[0].btfType: the kernel's BTF has no struct or union "
          '"no_such_struct_here"'),
    ("""
     tracepoints:
     - subsystem: sched
       event: sched_process_exec
       raw: true
       args:
       - index: 0
         type: char_buf
         sizeArgIndex: 2
         resolve: comm
     """, "p.yaml:14: spec.tracepoints[0].args[0].resolve: a char_buf argument cannot be resolved"),
    ("""
     tracepoints:
     - subsystem: sched
       event: sched_process_exec
       raw: true
       args:
       - index: 0
         type: string
         resolve: "real_parent..comm"
     """, 'p.yaml:13: spec.tracepoints[0].args[0].resolve: "" is not a member name'),
    ("""
     uprobes:
     - path: /bin/true
       symbols: [main]
       args:
       - index: 0
         type: string
         resolve: comm
     """, "p.yaml:12: spec.uprobes[0].args[0].resolve: resolve follows kernel structures: it applies to "
          "kprobes, tracepoints and LSM hooks, not to uprobes"),
])
def test_rejected_with_file_line_and_field(body, expected):
    errors = errors_of(body)
    assert any(e.startswith(expected) for e in errors), errors


def test_resolved_path_compiles_into_the_hook_config(btf):
    result = load_text(policy_text("""
        tracepoints:
        - subsystem: sched
          event: sched_process_exec
          raw: true
          args:
          - index: 2
            type: int
            resolve: "file.f_path.dentry.d_inode.i_uid.val"
        """), file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    cfg = compile_hook(result.policies[0].hooks[0], 1, HostNamespaces.unknown()).config
    r = cfg.resolve[0]
    assert (r.active, r.nloads) == (1, 3)        # bprm->file, ->f_path.dentry, ->d_inode
    assert list(r.loads)[:3] == [offset(btf, "linux_binprm", "file"),
                                 offset(btf, "file", "f_path") + offset(btf, "path", "dentry"),
                                 offset(btf, "dentry", "d_inode")]
    assert (r.last_size, r.last_signed) == (4, 0)
    assert cfg.arg_kind[0] == lib.TH_ARG_INT and not cfg.resolve[1].active


def test_tetragon_example_is_accepted_and_compiled():
    result = load_path(CONFORMANCE / "tetragon-examples" / "lsm_track_grandparent.yml")
    assert result.ok, [e.render() for e in result.errors]
    cfg = compile_hook(result.policies[0].hooks[0], 1, HostNamespaces.unknown()).config
    # bprm->mm, mm->owner, ->real_parent, ->real_parent, then the address of comm
    assert (cfg.resolve[0].nloads, cfg.resolve[0].last_size) == (4, 0)
    assert cfg.arg_kind[0] == lib.TH_ARG_STR_KERNEL


def test_kernel_without_btf_rejects_the_hook_with_the_reason(monkeypatch):
    def no_btf(path=B.VMLINUX):
        raise B.BtfError(f"{path}: No such file or directory")
    monkeypatch.setattr(B, "vmlinux", no_btf)
    result = load_text(policy_text(KPROBE.format(path="mm.owner.comm")), file="p.yaml")
    assert result.ok            # nothing wrong with the policy itself
    with pytest.raises(KernelUnreadable, match="resolve needs the kernel's BTF, and this kernel has none"):
        compile_hook(result.policies[0].hooks[0], 1, HostNamespaces.unknown())
