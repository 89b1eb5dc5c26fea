"""Tracepoint argument indexes (Tetragon's: positions in the format's field
list) mean the same field on a PREEMPT_RT kernel, whose format has a common
field more than a generic kernel's."""
from __future__ import annotations

from tetrahost.tracefs import event_fields

GENERIC = """name: sys_enter_openat
ID: 640
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:int __syscall_nr;	offset:8;	size:4;	signed:1;
	field:int dfd;	offset:16;	size:8;	signed:0;
	field:const char * filename;	offset:24;	size:8;	signed:0;
	field:int flags;	offset:32;	size:8;	signed:0;
	field:umode_t mode;	offset:40;	size:8;	signed:0;
"""
# Debian 12's 6.1-rt, as its tracefs shows it: one more common field
RT = GENERIC.replace("""	field:int common_pid;	offset:4;	size:4;	signed:1;
""", """	field:int common_pid;	offset:4;	size:4;	signed:1;
	field:unsigned char common_preempt_lazy_count;	offset:8;	size:1;	signed:0;
""").replace("field:int __syscall_nr;	offset:8;", "field:int __syscall_nr;	offset:12;")


def fields_of(tmp_path, text):
    d = tmp_path / "events" / "syscalls" / "sys_enter_openat"
    d.mkdir(parents=True)
    (d / "format").write_text(text)
    return event_fields("syscalls", "sys_enter_openat", tracefs_dirs=(str(tmp_path),))


def test_index_6_is_the_filename_on_both(tmp_path):
    generic = fields_of(tmp_path / "g", GENERIC)
    rt = fields_of(tmp_path / "rt", RT)
    assert [f.name for f in generic] == [f.name for f in rt]
    assert generic[6].name == rt[6].name == "filename"
    assert generic[6].offset == rt[6].offset == 24
    assert (generic[4].name, generic[4].offset, rt[4].offset) == ("__syscall_nr", 8, 12)   # its own offset
