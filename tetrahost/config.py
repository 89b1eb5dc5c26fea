"""The agent's configuration: /etc/tetragon/tetrahost.toml, one place for every default.

The dataclasses below ARE the schema: a key exists if and only if a field
exists, its type is the field's type, and its default is the field's default.
`load()` walks a TOML document against them and collects every problem (an
unknown key, a wrong type, a value out of range) as "FILE: key.path: what is
wrong", so `tetrahost config check` can report all of them at once instead of
one per edit-and-retry cycle.  Unknown keys are errors, not warnings: a typo
like `max_backup` silently keeping the default is exactly the kind of mistake
an operator never notices.

Names follow Tetragon's Helm values where one exists (export.filenames,
export.elasticsearch.*, exportFileMaxSizeMB -> export.file.max_size_mb, ...);
docs/configuration.md maps each one.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field

DEFAULT_PATH = "/etc/tetragon/tetrahost.toml"


def _opt(default, *, choices=None, min=None, check=None, factory=None):
    """A field with validation rules kept next to its default."""
    meta = {"choices": choices, "min": min, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _check_address(value: str) -> str | None:
    if value in ("", "off"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return f"expected HOST:PORT or :PORT (or \"\" to disable), got {value!r}"
    return None


def _check_url(value: str) -> str | None:
    if not value.startswith(("http://", "https://")):
        return f"expected an http:// or https:// URL, got {value!r}"
    return None


def _check_filters(value) -> str | None:
    from tetrahost.export.filters import FilterError, parse_filter_list
    try:
        parse_filter_list(value)
    except FilterError as exc:
        return str(exc)
    return None


def _check_process_fields(value: list) -> str | None:
    from tetrahost.export.filters import PROCESS_FIELDS
    bad = [v for v in value if v not in PROCESS_FIELDS]
    if bad:
        return f"unknown process field(s) {', '.join(map(repr, bad))} (known: {', '.join(sorted(PROCESS_FIELDS))})"
    return None


def _check_redaction(value) -> str | None:
    from tetrahost.export.redaction import RedactionError, Redactor, parse_filters
    try:
        Redactor(parse_filters(value))
    except RedactionError as exc:
        return str(exc)
    return None


def _check_index(value: str) -> str | None:
    # Elasticsearch's own rules for index names, checked here so a bad name
    # fails `config check` rather than every bulk request at run time.
    if not value or value != value.lower() or value[0] in "-_+" or any(c in value for c in ' "*\\<|,>/?#:'):
        return f"not a valid Elasticsearch index name: {value!r} (lower case, no spaces or \\/*?\"<>|,#:)"
    return None


@dataclass
class AgentConfig:
    node_name: str = ""                                   # "" = the host name
    policy_dir: str = "/etc/tetragon/policies.d"          # TracingPolicy YAML files loaded (and watched)
    # Tetragon's default --tracing-policy-dir, read too so a Tetragon host's files keep
    # working after switching; watched when it exists at start, "" = not read
    tetragon_policy_dir: str = "/etc/tetragon/tetragon.tp.d"
    ringbuf_size: int = _opt(0, min=0, check=lambda v: None if v == 0 or (v & (v - 1) == 0 and v >= 4096)
                             else f"expected 0 (built-in 8 MiB) or a power of two >= 4096, got {v}")
    proc_root: str = "/proc"
    # Seconds a read record's ring space waits for a stalled exporter before it is
    # given back to the kernel anyway (docs/pinning.md "Read is not released"):
    # until then a kill -9 loses none of it.  0 = on the loop's next turn (within 0.1 s).
    export_hold_seconds: float = _opt(2.0, min=0)
    # Pinned state (docs/pinning.md): the programs outlive a crash, a restart
    # and a package upgrade.  "" = no pinning (everything goes with the agent).
    pin_dir: str = _opt("/sys/fs/bpf/tetrahost", check=lambda v: None if v == "" or v.startswith("/")
                        else f"expected an absolute path in a bpf file system, or \"\", got {v!r}")
    # true: `systemctl stop` / an orderly exit also leave the policies enforcing
    # (until `tetrahost cleanup`, the next agent, or a reboot)
    keep_enforcing_on_stop: bool = False


@dataclass
class StdoutConfig:
    enabled: bool = False                 # Helm export.stdout.enabledCommand / enabledArgs
    format: str = _opt("json", choices=("json", "compact"))


@dataclass
class FileConfig:
    max_size_mb: float = _opt(10, min=0.001)      # Helm exportFileMaxSizeMB
    max_backups: int = _opt(5, min=0)             # Helm exportFileMaxBackups (0 = keep all)
    compress: bool = False                        # Helm exportFileCompress (gzip rotated files)


@dataclass
class JournaldConfig:
    enabled: bool = True
    agent_logs: str = _opt("auto", choices=("auto", "on", "off"))   # auto = when JOURNAL_STREAM is set


@dataclass
class ElasticsearchConfig:
    enabled: bool = False
    url: str = _opt("http://localhost:9200", check=_check_url)
    index: str = _opt("tetragon", check=_check_index)
    daily_index: bool = True              # append -YYYY.MM.DD (UTC)
    data_stream: bool = False             # index names a data stream: no suffix, @timestamp added
    username: str = ""
    password: str = ""
    api_key: str = ""                     # sent as "Authorization: ApiKey <value>"
    ca_file: str = ""
    verify_tls: bool = True
    batch_size: int = _opt(500, min=1)
    flush_interval: float = _opt(1.0, min=0.01)
    buffer_size: int = _opt(10000, min=1)
    timeout: float = _opt(10.0, min=0.1)
    max_retry_delay: float = _opt(30.0, min=0.1)


@dataclass
class ExportConfig:
    directory: str = "/var/log/tetragon"                            # Helm exportDirectory
    filenames: list[str] = _opt(None, factory=lambda: ["tetragon.log"])  # Helm export.filenames; [] = no file
    allow_list: list[dict] | str = _opt(None, factory=list, check=_check_filters)   # Helm exportAllowList
    deny_list: list[dict] | str = _opt(None, factory=list, check=_check_filters)    # Helm exportDenyList
    drop_process_fields: list[str] = _opt(None, factory=list, check=_check_process_fields)  # ~ fieldFilters
    rate_limit: int = _opt(-1, min=-1)                              # Helm exportRateLimit, events/min
    host_fields: bool = False             # add the "tetrahost" member (unit, cgroup, selector...): not Tetragon's schema
    process_cred: bool = False            # "cap", "process_credentials" in process objects (enable-process-cred)
    process_ns: bool = False              # "ns" in process objects (Tetragon's enable-process-ns)
    stack_addresses: bool = False         # stack traces show raw addresses (~ Tetragon's expose-stack-addresses)
    redaction_filters: list[dict] | str = _opt(None, factory=list, check=_check_redaction)  # Helm redactionFilters
    redact_default_secrets: bool = False  # also apply tetrahost.export.redaction.DEFAULT_FILTERS
    stdout: StdoutConfig = field(default_factory=StdoutConfig)
    file: FileConfig = field(default_factory=FileConfig)
    journald: JournaldConfig = field(default_factory=JournaldConfig)
    elasticsearch: ElasticsearchConfig = field(default_factory=ElasticsearchConfig)


@dataclass
class MetricsConfig:
    enabled: bool = True
    address: str = _opt(":2112", check=_check_address)   # Helm prometheus.address / port
    # tetrahost_new_binaries_total counts nothing for this long after start
    # (every binary is new to a fresh agent): metrics_binaries.py
    new_binary_learning_seconds: float = _opt(600.0, min=0)


@dataclass
class SystemdConfig:
    notify: bool = True                                   # sd_notify when NOTIFY_SOCKET is set
    status_interval: float = _opt(10.0, min=0.5)          # seconds between STATUS= updates


@dataclass
class LimitsConfig:
    # Each hook is a verified BPF object (~0.13 s of verifier time here, a few
    # fds, kernel memory): bounds so that a policy file cannot tie the agent up.
    max_hooks_per_policy: int = _opt(64, min=1)       # the seed policies have at most 6
    max_hooks_total: int = _opt(512, min=1)           # ~70 s of loading at start, ~4 fds each
    max_policy_file_kb: int = _opt(1024, min=1)       # larger policy files are rejected unread


@dataclass
class Config:
    agent: AgentConfig = field(default_factory=AgentConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    systemd: SystemdConfig = field(default_factory=SystemdConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    source: str = field(default="(defaults)", metadata={"internal": True})   # where it was read from


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def _type_name(tp) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _check_type(value, tp, path: str) -> str | None:
    """None when value fits the annotation tp, else the problem."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, __import__("types").UnionType):
        if any(_check_type(value, t, path) is None for t in typing.get_args(tp)):
            return None
        return f"{path}: expected {' or '.join(_describe(t) for t in typing.get_args(tp))}, got {value!r}"
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            return f"{path}: expected a list of {_describe(item).removeprefix('a ')}s, got {value!r}"
        for i, v in enumerate(value):
            err = _check_type(v, item, f"{path}[{i}]")
            if err:
                return err
        return None
    if tp is dict:
        return None if isinstance(value, dict) else f"{path}: expected a table, got {value!r}"
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    return None if ok else f"{path}: expected {_type_name(tp)}, got {value!r}"


def _describe(tp) -> str:
    if typing.get_origin(tp) is list:
        return "a list"
    return "a table" if tp is dict else _type_name(tp)


def _apply(obj, table: dict, prefix: str, problems: list[str]) -> None:
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj) if not f.metadata.get("internal")}
    for key, value in table.items():
        path = f"{prefix}{key}"
        f = fields.get(key)
        if f is None:
            problems.append(f"{path}: unknown key (known in {prefix.rstrip('.') or 'the top level'}: "
                            f"{', '.join(fields)})")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                problems.append(f"{path}: expected a table [{path}], got {value!r}")
            else:
                _apply(getattr(obj, key), value, path + ".", problems)
            continue
        err = _check_type(value, tp, path)
        if err is None:
            err = _check_rules(value, f.metadata, path)
        if err:
            problems.append(err)
        else:
            setattr(obj, key, float(value) if tp is float else value)


def _check_rules(value, meta, path: str) -> str | None:
    if meta.get("choices") and value not in meta["choices"]:
        return f"{path}: expected one of {', '.join(map(repr, meta['choices']))}, got {value!r}"
    if meta.get("min") is not None and value < meta["min"]:
        return f"{path}: expected a value >= {meta['min']}, got {value!r}"
    if meta.get("check"):
        err = meta["check"](value)
        if err:
            # Errors about an item of a list ("[0].pid: ...") attach to the key's path.
            return f"{path}{err}" if err.startswith("[") else f"{path}: {err}"
    return None


def parse(text: str, source: str = "<string>") -> Config:
    """A Config from TOML text; ConfigError listing every problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    cfg = Config(source=source)
    problems: list[str] = []
    _apply(cfg, doc, "", problems)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def load(path: str | None = None) -> Config:
    """Read `path`; with None, DEFAULT_PATH if it exists, else the defaults.

    An explicitly named file that is missing is an error; the default file
    being absent is not (a host may run on defaults plus CLI flags)."""
    explicit = path is not None
    path = path or DEFAULT_PATH
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(path, ["file not found"]) from None
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"cannot read: {exc}"]) from None
    return parse(text, path)


def export_paths(cfg: Config) -> list[str]:
    """Absolute paths of the JSON export files (relative names live in export.directory)."""
    import os.path
    return [n if os.path.isabs(n) else os.path.join(cfg.export.directory, n) for n in cfg.export.filenames]


def as_dict(cfg) -> dict:
    """The configuration as plain data (for `tetrahost config show`)."""
    d = dataclasses.asdict(cfg)
    d.pop("source", None)
    return d
