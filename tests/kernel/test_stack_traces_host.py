"""kernelStackTrace / userStackTrace on the kernel the tests run on: a syscall
kprobe (the sys_enter fallback where kprobes are missing) whose Post carries
both stacks, resolved in user space: kernel frames by /proc/kallsyms, user
frames by the ELF symbols of the mapped file.  Addresses are not exported
(export.stack_addresses is off)."""
from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

from agent_harness import policy_events, start_with_policies

pytestmark = pytest.mark.kernel

ID = uuid.uuid4().hex[:6]
NAME = f"stacks-{ID}"

# frame pointers kept, no inlining, the syscall instruction in our own
# function (libc's syscall() has no frame pointer to walk): main ->
# make_the_call -> getppid.  It waits for its stdin to close, so that its
# mappings are there when the agent resolves the user stack.
PROGRAM = r"""
#include <unistd.h>

__attribute__((noinline)) long make_the_call(void)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(110L) : "rcx", "r11", "memory");
	return r;
}

int main(void)
{
	char c;
	long ppid = make_the_call();

	while (read(0, &c, 1) > 0)
		;
	return ppid > 0 ? 0 : 1;
}
"""


def stack_policy(binary: str) -> str:
    return f"""
  kprobes:
  - call: sys_getppid
    syscall: true
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{binary}"]
      matchActions:
      - action: Post
        kernelStackTrace: true
        userStackTrace: true
"""


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> str:
    cc = shutil.which("cc")
    if cc is None:
        pytest.fail("no C compiler (cc) to build the workload")
    d = tmp_path_factory.mktemp("stacks")
    src, out = d / "stacks.c", d / f"th-stacks-{ID}"
    src.write_text(PROGRAM)
    subprocess.run([cc, "-O0", "-fno-omit-frame-pointer", "-o", str(out), str(src)], check=True)
    return str(out)


@pytest.fixture(scope="module")
def agent(tmp_path_factory, binary):
    a = start_with_policies(tmp_path_factory, {NAME: stack_policy(binary)})
    yield a
    assert a.stop() == 0


def test_event_carries_both_stacks_resolved(agent, binary):
    proc = subprocess.Popen([binary], stdin=subprocess.PIPE)
    try:
        (event,) = policy_events(agent, NAME, count=1)
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    kernel, user = event["kernel_stack_trace"], event["user_stack_trace"]
    # the syscall entered the kernel through do_syscall_64, whatever hooked it
    assert "do_syscall_64" in [f.get("symbol") for f in kernel], kernel
    assert all("address" not in f for f in kernel + user)
    ours = [f["symbol"] for f in user if f.get("module") == binary]
    assert "make_the_call" in ours and "main" in ours, user
    assert ours.index("make_the_call") < ours.index("main")        # innermost first
