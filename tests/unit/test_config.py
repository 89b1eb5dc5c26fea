"""Configuration file: defaults, every key checked, errors naming file and key; CLI overrides."""
from __future__ import annotations

import argparse
import pathlib
import re

import pytest

from tetrahost import config
from tetrahost.cli import config_cmd, run_cmd

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "packaging" / "etc" / "tetrahost.toml"


def problems(text: str) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        config.parse(text, "t.toml")
    assert str(info.value).startswith("t.toml: ")
    return info.value.problems


def test_defaults_are_tetragon_like():
    c = config.Config()
    assert config.export_paths(c) == ["/var/log/tetragon/tetragon.log"]
    assert (c.export.file.max_size_mb, c.export.file.max_backups, c.export.file.compress) == (10, 5, False)
    assert c.agent.policy_dir == "/etc/tetragon/policies.d"
    assert c.metrics.enabled and c.metrics.address == ":2112"
    assert c.export.journald.enabled and not c.export.stdout.enabled
    assert not c.export.elasticsearch.enabled and c.export.rate_limit == -1
    assert not c.export.process_cred and not c.export.process_ns     # Tetragon's enable-process-cred/-ns


def test_process_cred_and_ns_reach_the_renderer():
    from tetrahost.export.tetragon_json import TetragonJSON
    for cred, ns in ((True, False), (False, True)):
        c = config.parse(f"[export]\nprocess_cred = {str(cred).lower()}\nprocess_ns = {str(ns).lower()}\n", "t.toml")
        renderer = TetragonJSON("h")
        run_cmd.configure_rendering(renderer, c.export)
        assert (renderer.process_cred, renderer.process_ns) == (cred, ns)
    assert problems('[export]\nprocess_ns = "yes"\n')[0].startswith("export.process_ns")


def test_empty_file_gives_defaults():
    assert config.as_dict(config.parse("", "x")) == config.as_dict(config.Config())


def test_values_are_applied():
    c = config.parse("""
[agent]
node_name = "web1"
ringbuf_size = 4096
[export]
filenames = ["a.log", "/abs/b.log"]
directory = "/srv/log"
rate_limit = 600
allow_list = [{event_set = ["PROCESS_EXEC"]}]
drop_process_fields = ["cap", "ns"]
[export.file]
max_size_mb = 1
compress = true
[export.stdout]
enabled = true
format = "compact"
[export.elasticsearch]
enabled = true
url = "https://es:9200"
index = "tetragon-events"
[metrics]
address = "127.0.0.1:9999"
""", "x.toml")
    assert c.source == "x.toml" and c.agent.node_name == "web1" and c.agent.ringbuf_size == 4096
    assert config.export_paths(c) == ["/srv/log/a.log", "/abs/b.log"]
    assert c.export.file.max_size_mb == 1.0 and isinstance(c.export.file.max_size_mb, float)
    assert c.export.stdout.format == "compact" and c.export.elasticsearch.url == "https://es:9200"
    assert c.metrics.address == "127.0.0.1:9999" and c.export.rate_limit == 600


def test_unknown_keys_are_errors_with_their_path():
    p = problems('[export.stdout]\nenabeld = true\n[nope]\nx = 1\n')
    assert p[0].startswith("export.stdout.enabeld: unknown key") and "enabled" in p[0]
    assert p[1].startswith("nope: unknown key")


def test_every_problem_is_reported_at_once():
    p = problems("""
[agent]
ringbuf_size = 5000
[export]
rate_limit = -2
filenames = ["ok", 3]
[export.file]
max_backups = -1
[export.stdout]
enabled = "yes"
format = "yaml"
[export.elasticsearch]
url = "ftp://x"
index = "Upper"
[metrics]
address = "2112"
""")
    keys = [x.split(":")[0] for x in p]
    assert keys == ["agent.ringbuf_size", "export.rate_limit", "export.filenames[1]",
                    "export.file.max_backups", "export.stdout.enabled", "export.stdout.format",
                    "export.elasticsearch.url", "export.elasticsearch.index", "metrics.address"]


def test_filter_errors_name_the_filter():
    p = problems('[export]\nallow_list = [{event_set=["PROCESS_EXEC"]}, {binary_regex=["("]}]\n'
                 'deny_list = [{pid_set=[1]}]\n')
    assert p[0].startswith("export.allow_list[1].binary_regex: bad regular expression")
    assert p[1].startswith("export.deny_list[0].pid_set: unknown filter key")


def test_tetragon_json_lines_filter_form():
    c = config.parse("[export]\nallow_list = '''\n{\"event_set\":[\"PROCESS_EXEC\"]}\n"
                     "{\"policy_names\":[\"p\"]}\n'''\n", "x")
    assert isinstance(c.export.allow_list, str)
    assert "not a JSON object" in problems("[export]\ndeny_list = 'nope'\n")[0]


def test_bad_toml_and_missing_files(tmp_path):
    assert problems("[export\n")[0].startswith("not valid TOML")
    with pytest.raises(config.ConfigError, match="file not found"):
        config.load(str(tmp_path / "missing.toml"))


def test_packaged_example_is_valid_and_all_defaults():
    """The commented example documents every key with its default: uncommented it must equal the defaults."""
    text = EXAMPLE.read_text()
    assert config.as_dict(config.parse(text, str(EXAMPLE))) == config.as_dict(config.Config())
    # Settings are written "# key = default" under real [section] headers; prose uses "##".
    uncommented = "\n".join(line[2:] if re.match(r"# [a-z_]+ = ", line) else line
                            for line in text.splitlines())
    cfg = config.parse(uncommented, "uncommented")
    assert config.as_dict(cfg) == config.as_dict(config.Config())
    documented = {line.split("=")[0].strip() for line in uncommented.splitlines()
                  if "=" in line and not line.lstrip().startswith("#")}
    assert {"enabled", "format", "filenames", "url", "index", "address", "policy_dir", "max_size_mb",
            "max_backups", "compress", "allow_list", "deny_list", "rate_limit"} <= documented
    docs = (REPO / "docs" / "configuration.md").read_text()
    for section, fields in config.as_dict(config.Config()).items():
        for key, value in fields.items():
            if isinstance(value, dict):
                for sub in value:
                    assert f"`{section}.{key}.{sub}`" in docs, f"{section}.{key}.{sub} undocumented"
            else:
                assert f"`{section}.{key}`" in docs, f"{section}.{key} undocumented"


def _parser():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    config_cmd.register(sub)
    run_cmd.register(sub)
    return parser


def test_config_check_command(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text("[metrics]\nenabled = false\n")
    args = _parser().parse_args(["config", "check", str(good)])
    assert args.func(args) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[export.file]\nmax_backups = \"five\"\ncompres = true\n")
    args = _parser().parse_args(["config", "check", str(bad)])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert f"{bad}: export.file.max_backups: expected an integer, got 'five'" in err
    assert f"{bad}: export.file.compres: unknown key" in err


def test_config_show_command(tmp_path, capsys):
    f = tmp_path / "c.toml"
    f.write_text("[agent]\nnode_name = \"n1\"\n")
    args = _parser().parse_args(["config", "show", str(f)])
    assert args.func(args) == 0
    assert '"node_name": "n1"' in capsys.readouterr().out


def test_run_flags_override_the_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[export.stdout]\nenabled = true\n[metrics]\naddress = \":2112\"\n"
                 "[export]\nfilenames = [\"x.log\"]\n")
    args = _parser().parse_args(["run", "--config", str(f), "--no-stdout", "--export-file", "ev.json",
                                 "--metrics-address", "off", "--ringbuf-size", "4096",
                                 "--node-name", "n2", "--no-journald", "--export-rate-limit", "5",
                                 "--enable-process-cred", "--no-enable-process-ns"])
    cfg = run_cmd.apply_overrides(config.load(args.config), args)
    assert cfg.export.process_cred and not cfg.export.process_ns
    assert cfg.export.filenames == [str(pathlib.Path("ev.json").resolve())]
    assert not cfg.export.stdout.enabled and not cfg.metrics.enabled and not cfg.export.journald.enabled
    assert (cfg.agent.ringbuf_size, cfg.agent.node_name, cfg.export.rate_limit) == (4096, "n2", 5)
    assert cfg.agent.proc_root == "/proc"
    # Without flags the file's values stay.
    args = _parser().parse_args(["run", "--config", str(f)])
    cfg = run_cmd.apply_overrides(config.load(args.config), args)
    assert cfg.export.stdout.enabled and cfg.export.filenames == ["x.log"] and cfg.metrics.enabled
    assert not cfg.export.process_cred and not cfg.export.process_ns
