"""Redaction filters: Tetragon's redactionFilters semantics, the shipped
defaults, configuration errors, and the renderers applying them."""
import base64
import json

import pytest
from test_argtypes import arg, buf_bytes
from test_proccache import exec_rec

from tetrahost.bpf.native import lib
from tetrahost.events.proccache import ProcessCache
from tetrahost.export.arg_json import render_arg
from tetrahost.export.redaction import DEFAULT_FILTERS, RedactionError, Redactor, parse_filters
from tetrahost.export.tetragon_json import TetragonJSON

DEFAULTS = Redactor(DEFAULT_FILTERS)
AWS = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("binary, text, want", [
    ("/usr/bin/app", "--password=hunter2 -v", "--password=***** -v"),
    ("/usr/bin/app", "-v --PASSWD hunter2", "-v --PASSWD *****"),
    ("/usr/bin/app", '--token "a b"', "--token *****"),
    ("/usr/bin/app", "--api-key=k1 --client-secret=s2", "--api-key=***** --client-secret=*****"),
    ("/usr/bin/mysql", "-uroot -ps3cret db", "-uroot -p***** db"),
    ("/usr/bin/mysql", "-uroot -p db", "-uroot -p db"),                 # -p alone prompts: nothing to hide
    ("/usr/bin/ssh", "-p2222 host", "-p2222 host"),                     # -p of other tools is not a password
    ("/usr/bin/curl", '-H "Authorization: Bearer eyJhbGciOi.x-y_z" u', '-H "Authorization: Bearer *****" u'),
    ("/usr/bin/env", f"AWS_SECRET_ACCESS_KEY={AWS} aws s3 ls", "AWS_SECRET_ACCESS_KEY=***** aws s3 ls"),
    ("/usr/bin/app", f'{{"SecretAccessKey": "{AWS}"}}', '{"SecretAccessKey": "*****"}'),
    ("/usr/bin/app", "--verbose --passwordless", "--verbose --passwordless"),
])
def test_default_patterns(binary, text, want):
    assert DEFAULTS.text(binary, text) == want


def test_every_capture_group_is_masked_and_binary_regex_limits():
    r = Redactor([{"redact": [r"user=(\w+) pass=(\w+)"], "binary_regex": [r"^/opt/app$"]}])
    assert r.text("/opt/app", "x user=bob pass=pw user=al pass=q") == "x user=***** pass=***** user=***** pass=*****"
    assert r.text("/opt/other", "user=bob pass=pw") == "user=bob pass=pw"
    assert r.data("/opt/app", b"\xffuser=bob pass=pw\0") == b"\xffuser=***** pass=*****\0"


def test_tetragon_json_lines_form_and_errors():
    assert parse_filters('{"redact":["a(b)"]}\n\n{"redact":["(c)"],"binary_regex":["d"]}\n') == \
        [{"redact": ["a(b)"]}, {"redact": ["(c)"], "binary_regex": ["d"]}]
    for bad, msg in [([{"redact": ["("]}], r"\[0\]\.redact\[0\]: invalid regular expression"),
                     ([{"redact": ["x"], "binaries": []}], r"\[0\]: unknown key\(s\) binaries"),
                     ([{"binary_regex": ["x"]}], r"\[0\]\.redact: at least one"),
                     ("{not json", "line 1: not JSON"),
                     ([{"redact": ["x"], "match": [{}]}], "match: deprecated")]:
        with pytest.raises(RedactionError, match=msg):
            Redactor(parse_filters(bad))
    assert Redactor.from_config([], False) is None


def test_renderers_redact_arguments_strings_and_buffers():
    r = TetragonJSON("h", boot_offset_ns=0, redactor=DEFAULTS)
    ev = ProcessCache("h").handle(exec_rec(9, 1, 10, binary=b"/usr/bin/app", args=[b"--password=hunter2"]))
    assert json.loads(r.render(ev))["process_exec"]["process"]["arguments"] == "--password=*****"
    out = render_arg(lib.TH_ARG_STR_USER, arg("string"), b"/tmp/x --token abc", redactor=DEFAULTS, binary="/a")
    assert out == {"string_arg": "/tmp/x --token *****"}
    data = b"GET / HTTP/1.1\r\nAuthorization: Bearer abc.def\r\n"
    out = render_arg(lib.TH_ARG_BUF_USER, arg("char_buf"), buf_bytes(data, len(data)), redactor=DEFAULTS, binary="/a")
    assert base64.b64decode(out["bytes_arg"]) == b"GET / HTTP/1.1\r\nAuthorization: Bearer *****\r\n"
    out = render_arg(lib.TH_ARG_BUF_USER, arg("char_buf"), buf_bytes(b"--password=x " * 19, 70000),
                     redactor=DEFAULTS, binary="/a")["truncated_bytes_arg"]
    assert b"--password=x" not in base64.b64decode(out["bytes_arg"]) and out["orig_size"] == "70000"
