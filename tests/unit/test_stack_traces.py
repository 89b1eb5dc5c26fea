"""kernelStackTrace / userStackTrace: validation, the selector bits, and how
stack map values become Tetragon's StackTraceEntry lists (kallsyms for the
kernel, ELF symbols of the mapped file for user space)."""
import ctypes
import ctypes.util
import os
import struct

from tetrahost.bpf.native import lib
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.export.stacks import KernelSymbols, StackRenderer, _mappings, frames, resolve_user
from tetrahost.policy import load_text
from tetrahost.policy.compile import compile_hook

from policy.policytest_helpers import errors_of, policy_text

KPROBE = """
kprobes:
- call: sys_getppid
  syscall: true
  selectors:
  - matchActions:
    - action: Post
      kernelStackTrace: true
      userStackTrace: {user}
"""


def test_post_with_stacks_sets_the_selector_bits():
    result = load_text(policy_text(KPROBE.format(user="true")), file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    out = compile_hook(result.policies[0].hooks[0], 1, HostNamespaces.unknown())
    assert out.config.selectors[0].stack_traces == lib.TH_STACK_KERNEL | lib.TH_STACK_USER
    assert out.needs_stacks
    result = load_text(policy_text(KPROBE.format(user="false")), file="p.yaml")
    out = compile_hook(result.policies[0].hooks[0], 1, HostNamespaces.unknown())
    assert out.config.selectors[0].stack_traces == lib.TH_STACK_KERNEL


def test_stacks_only_on_kprobes():
    body = ("tracepoints:\n- subsystem: syscalls\n  event: sys_enter_getppid\n  selectors:\n"
            "  - matchActions:\n    - {action: Post, userStackTrace: true}\n")
    assert errors_of(body) == [
        "p.yaml:11: spec.tracepoints[0].selectors[0].matchActions[0].userStackTrace: userStackTrace is reported "
        "on kprobe events only (Tetragon's ProcessKprobe has the field), not on a tracepoint"]


def test_frames_stop_at_the_first_zero():
    raw = struct.pack("<4Q", 0x10, 0x20, 0, 0x30) + bytes(8 * (lib.TH_STACK_DEPTH - 4))
    assert frames(raw) == [0x10, 0x20]


def test_kernel_symbols_and_addresses_only_when_configured(tmp_path):
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text("ffffffff81000000 T _stext\nffffffff81000100 T do_syscall_64\n"
                        "ffffffff81000200 d some_data\nffffffffc0000000 t mod_fn\t[nf_tables]\n")
    ks = KernelSymbols(str(kallsyms))
    assert ks.resolve(0xffffffff81000110) == ("do_syscall_64", 0x10, "")
    assert ks.resolve(0xffffffffc0000004) == ("mod_fn", 4, "nf_tables")
    raw = struct.pack("<2Q", 0xffffffff81000110, 0)
    hidden = StackRenderer(False, kallsyms=str(kallsyms)).kernel_stack(raw)
    shown = StackRenderer(True, kallsyms=str(kallsyms)).kernel_stack(raw)
    assert hidden == [{"offset": "16", "symbol": "do_syscall_64"}]
    assert shown == [{"address": str(0xffffffff81000110), "offset": "16", "symbol": "do_syscall_64"}]


def test_hidden_kallsyms_addresses_resolve_nothing(tmp_path):
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text("0000000000000000 T do_syscall_64\n")
    # an unresolved frame has neither symbol nor offset (the offset would be the address)
    assert StackRenderer(False, kallsyms=str(kallsyms)).kernel_stack(struct.pack("<2Q", 0x1234, 0)) == [{}]


def test_user_address_resolves_to_the_libc_function_and_its_file():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    addr = ctypes.cast(libc.getpid, ctypes.c_void_p).value
    symbol, offset, module = resolve_user(os.getpid(), addr + 1, _mappings(os.getpid(), "/proc"))
    assert symbol in ("getpid", "__getpid") and offset == 1     # aliases of one address
    assert os.path.basename(module).startswith("libc")


def test_user_stack_of_a_gone_process_keeps_no_address():
    raw = struct.pack("<2Q", 0x401000, 0)
    assert StackRenderer(False, proc="/nonexistent").user_stack(4242, raw) == [{}]
