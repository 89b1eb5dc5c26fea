"""Pinned state: what keeps enforcing while no agent runs (docs/pinning.md).

Layout under the pin directory (agent.pin_dir, /sys/fs/bpf/tetrahost):

    manifest              the manifest (JSON in a one-element array map)
    g<N>/process/         the process sensor's maps (ring buffer, loss
                          counters, ...) and links
    g<N>/dispatch/        the syscall dispatcher's maps and links
    g<N>/hooks/<id>/l<i>  each policy hook's links (dispatched hooks have
                          none: the dispatcher's pinned program arrays hold them)

A generation g<N> is one set of kernel objects sharing one ring buffer.  An
agent that finds a manifest it can trust, from the same build (sha256 of the
.bpf.o files) and pin layout, adopts the generation; otherwise it starts a new
one, loads everything there, and removes the older generations once its own
start-up loads are attached (new before old).  Anything in the directory the
manifest does not name is an orphan, removed at the same point.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time

from tetrahost.bpf import BpfError
from tetrahost.bpf import pinned
from tetrahost.events.decode import records_layout_id
from tetrahost.sensors.objects import find_object

log = logging.getLogger(__name__)

DEFAULT_PIN_DIR = "/sys/fs/bpf/tetrahost"
PIN_DIR_ENV = "TETRAHOST_PIN_DIR"          # overrides agent.pin_dir (tests use private ones)
PIN_LAYOUT = 1                             # this module's layout and manifest schema
MAGIC = "tetrahost-pins"
MANIFEST = "manifest"
OBJECTS = ("process", "dispatch", "generic")
_GEN = re.compile(r"g(\d+)$")


class ManifestError(ValueError):
    """The manifest is not one this agent wrote (corrupted, foreign, other layout)."""


def build_id(names=OBJECTS) -> str:
    """What the pinned programs were built from: sha256 of the BPF objects."""
    h = hashlib.sha256()
    for name in names:
        h.update(find_object(name).read_bytes())
    return h.hexdigest()[:32]


def parse_manifest(raw: bytes) -> dict:
    """The manifest's JSON, checked field by field: ManifestError says what is wrong."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("magic") != MAGIC:
        raise ManifestError(f"magic: expected {MAGIC!r} (not written by tetrahost)")
    if doc.get("layout") != PIN_LAYOUT:
        raise ManifestError(f"layout: {doc.get('layout')!r}, this agent knows {PIN_LAYOUT}")
    for key, kind in (("build", str), ("generation", int), ("ringbuf_bytes", int), ("files", dict)):
        if not isinstance(doc.get(key), kind):
            raise ManifestError(f"{key}: expected {kind.__name__}, got {type(doc.get(key)).__name__}")
    used = doc.get("hook_ids_used", 0)      # (absent in manifests of earlier builds)
    if not _count(used):
        raise ManifestError(f"hook_ids_used: expected a non-negative int, got {used!r}")
    reported = doc.get("losses_reported", {})
    if not isinstance(reported, dict) or not all(isinstance(k, str) and _count(v) for k, v in reported.items()):
        raise ManifestError(f"losses_reported: expected record kind -> non-negative int, got {reported!r}")
    for path, entry in doc["files"].items():
        where = f"files.{path}"
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str) \
                or not isinstance(entry.get("policies"), list):
            raise ManifestError(f"{where}: expected digest and policies")
        for i, pol in enumerate(entry["policies"]):
            if not isinstance(pol, dict) or not isinstance(pol.get("name"), str) \
                    or not isinstance(pol.get("hooks"), list):
                raise ManifestError(f"{where}.policies[{i}]: expected name and hooks")
            for j, hook in enumerate(pol["hooks"]):
                ok = isinstance(hook, dict) and isinstance(hook.get("id"), int) and hook["id"] > 0 \
                    and isinstance(hook.get("links"), int) and isinstance(hook.get("config"), str) \
                    and (hook.get("dispatch") is None or _valid_dispatch(hook["dispatch"]))
                if not ok:
                    raise ManifestError(f"{where}.policies[{i}].hooks[{j}]: expected id, links, config, dispatch")
    return doc


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _valid_dispatch(d) -> bool:
    return isinstance(d, dict) and isinstance(d.get("slot"), int) and \
        all(isinstance(d.get(k, []), list) and all(isinstance(n, int) for n in d.get(k, [])) for k in ("enter", "exit"))


class PinStore:
    """One agent's view of the pin directory: what it found, what it pins."""

    def __init__(self, root: str):
        self.root = root.rstrip("/") or "/"
        self.build = build_id()
        self.previous: dict | None = None    # the manifest found at start, when trusted
        self.problem = ""                    # why the manifest found was not trusted
        self.adopted = False                 # True: this agent continues previous["generation"]
        self.generation = 0
        self.ringbuf_bytes = 0
        # The highest hook id any agent of this directory gave out (see
        # highest_hook_id); the manifest carries it on.
        self.hook_ids_used = 0
        # In-kernel loss counts (record kind -> n) of this generation the
        # agents before this one have reported: the counters are cumulative
        # and outlive agents, each agent reports what is beyond this.
        self.losses_reported: dict[str, int] = {}

    # -- start ---------------------------------------------------------------------
    def open(self, ringbuf_bytes: int) -> bool:
        """Read what is pinned; True when the generation found can be adopted."""
        self.ringbuf_bytes = ringbuf_bytes
        os.makedirs(self.root, exist_ok=True)
        try:
            raw = pinned.read_blob(self.path(MANIFEST))
            if raw is not None:
                self.previous = parse_manifest(raw)
        except (ManifestError, ValueError, BpfError) as exc:
            self.problem = f"{self.path(MANIFEST)}: {exc}"
            log.error("pinned state: the manifest is not trusted and will be replaced: %s", self.problem)
        prev = self.previous
        gens = self.generations()
        self.hook_ids_used = self.highest_hook_id()
        if prev is not None and prev["build"] != self.build:
            self.problem = f"pinned by another build ({prev['build']}, this is {self.build}): replaced"
        elif prev is not None and prev["ringbuf_bytes"] != ringbuf_bytes:
            self.problem = f"ring buffer of {prev['ringbuf_bytes']} bytes, configured {ringbuf_bytes}: replaced"
        elif prev is not None and prev["generation"] not in gens:
            self.problem = f"generation g{prev['generation']} named by the manifest is missing"
        elif prev is not None:
            self.adopted = True
            self.generation = prev["generation"]
            self.losses_reported = dict(prev.get("losses_reported", {}))
            log.info("pinned state: adopting generation g%d of %s", self.generation, self.root)
            return True
        if self.problem:
            log.warning("pinned state: %s", self.problem)
        self.generation = max(gens, default=0) + 1
        os.makedirs(self.gen_path(), exist_ok=True)
        return False

    @property
    def records_compatible(self) -> bool:
        """Records the previous agent's programs wrote decode with this build's decoder."""
        return self.previous is not None and self.previous.get("records") == records_layout_id()

    def replaced_hooks(self) -> dict[int, tuple[str, str, str, int]]:
        """A replaced generation's hook ids -> (file, digest, policy, hook index):
        the records its programs wrote until the new ones took over are the
        events of the same hooks of an unchanged file, loaded fresh."""
        if self.adopted or not self.records_compatible:
            return {}
        return {h["id"]: (path, entry["digest"], pol["name"], i)
                for path, entry in self.previous["files"].items()
                for pol in entry["policies"] for i, h in enumerate(pol["hooks"])}

    def highest_hook_id(self) -> int:
        """Hook ids go into the records, and a record can be read after its
        hook is gone: from a replaced generation's ring buffer (an upgrade
        numbers its hooks afresh) or left behind by a killed agent.  A new
        hook must never take an id an earlier agent used, or such a record
        is reported as another policy's event.  The highest id known: the
        manifest's high-water mark and hooks, and every generation's hook
        directories (what a crash left unlisted)."""
        ids = {0}
        prev = self.previous
        if prev is not None:
            ids.add(prev.get("hook_ids_used", 0))
            ids |= {h["id"] for e in prev["files"].values() for p in e["policies"] for h in p["hooks"]}
        for gen in self.generations():
            try:
                ids |= {int(n) for n in os.listdir(self.path(f"g{gen}", "hooks")) if n.isdigit()}
            except (FileNotFoundError, NotADirectoryError):
                pass
        return max(ids)

    def pinned_files(self) -> dict:
        """path -> manifest entry of the policy files the adopted generation enforces."""
        return dict(self.previous["files"]) if self.adopted else {}

    # -- paths ---------------------------------------------------------------------
    def path(self, *parts) -> str:
        return os.path.join(self.root, *map(str, parts))

    def gen_path(self, *parts) -> str:
        return self.path(f"g{self.generation}", *parts)

    def hook_dir(self, hook_id: int) -> str:
        return self.gen_path("hooks", hook_id)

    def generations(self) -> list[int]:
        try:
            return sorted(int(m.group(1)) for m in map(_GEN.match, os.listdir(self.root)) if m)
        except FileNotFoundError:
            return []

    def pinned_hook_ids(self) -> set[int]:
        try:
            return {int(n) for n in os.listdir(self.gen_path("hooks")) if n.isdigit()}
        except FileNotFoundError:
            return set()

    # -- pinning -------------------------------------------------------------------
    def pin_links(self, directory: str, links) -> None:
        os.makedirs(directory, exist_ok=True)
        for i, link in enumerate(links):
            link.pin(os.path.join(directory, f"l{i}"))

    def open_links(self, directory: str, count: int, what: str) -> list:
        return [pinned.open_link(os.path.join(directory, f"l{i}"), f"{what} (pinned)") for i in range(count)]

    def write_manifest(self, files: dict) -> None:
        doc = {"magic": MAGIC, "layout": PIN_LAYOUT, "build": self.build, "generation": self.generation,
               "ringbuf_bytes": self.ringbuf_bytes, "agent_pid": os.getpid(), "written": time.time(),
               "records": records_layout_id(), "hook_ids_used": self.hook_ids_used,
               "losses_reported": self.losses_reported, "files": files}
        pinned.write_blob(self.path(MANIFEST), json.dumps(doc, sort_keys=True).encode())

    # -- removal -------------------------------------------------------------------
    def remove_hook(self, hook_id: int) -> None:
        remove_tree(self.hook_dir(hook_id))

    def orphans(self, live_hooks: set[int]) -> list[str]:
        """Pins nothing running owns: older generations, stray names, hooks of
        ours the manifest does not list (a load cut short by a crash)."""
        out = []
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return out
        for name in names:
            if name != MANIFEST and name != f"g{self.generation}":
                out.append(self.path(name))
        out += [self.hook_dir(i) for i in sorted(self.pinned_hook_ids() - live_hooks)]
        return out

    def remove_orphans(self, live_hooks: set[int], drain) -> list[str]:
        """Remove the orphans (after the start-up loads: new before old); their
        paths.  An older generation's ring buffer and loss counters outlive
        its pins long enough to be read: drain(fd, compatible, lost, delivered)
        gets the ring buffer once its programs are detached (all of their
        records are in it by then), what the counters hold beyond what earlier
        agents reported (record kind -> n), and its exporters' delivery marks
        (an fd of its `delivered` map, or None)."""
        removed = []
        prev = self.previous
        for path in self.orphans(live_hooks):
            events = _open_pinned(path, "events")
            losses = _open_pinned(path, "losses")
            delivered = _open_pinned(path, "delivered")
            remove_tree(path)
            removed.append(path)
            try:
                reported = prev.get("losses_reported", {}) if prev is not None and \
                    path == self.path(f"g{prev['generation']}") else {}
                lost = _losses_beyond(losses, reported) if losses is not None else {}
                if events is not None or lost:
                    drain(events, self.records_compatible, lost, delivered)
            except (OSError, ValueError, BpfError) as exc:
                log.error("pinned state: reading the ring buffer of %s: %s", path, exc)
            finally:
                for fd in (events, losses, delivered):
                    if fd is not None:
                        os.close(fd)
        if removed:
            log.info("pinned state: removed %d orphan pin(s): %s", len(removed), ", ".join(removed[:8]))
        return removed

    def remove_all(self) -> None:
        remove_tree(self.root)


def _open_pinned(path: str, name: str) -> int | None:
    """An fd of a generation's pinned process map `name` (kept past its unpinning), or None."""
    target = os.path.join(path, "process", name)
    if not os.path.exists(target):
        return None
    try:
        return pinned.obj_get(target)
    except (OSError, BpfError):
        return None


def _losses_beyond(fd: int, reported: dict) -> dict[str, int]:
    """A generation's in-kernel loss counts (record kind -> n) beyond `reported`."""
    from tetrahost.sensors.process import LOSS_SLOTS
    totals = pinned.percpu_u64_sums(fd, LOSS_SLOTS.values())
    return {kind: totals[slot] - reported.get(kind, 0) for kind, slot in LOSS_SLOTS.items()
            if totals[slot] > reported.get(kind, 0)}


def remove_tree(path: str) -> None:
    """Unpin everything under path: with no fd left, the kernel detaches the
    links and frees the programs and maps."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def resolve_pin_dir(configured: str) -> str:
    """agent.pin_dir, or $TETRAHOST_PIN_DIR when set; "" = no pinning."""
    return os.environ.get(PIN_DIR_ENV, configured)


def inspect(root: str) -> dict:
    """What is pinned under root, for `tetrahost probe` / `tetrahost cleanup --dry-run`:
    the manifest (or why it is not trusted), the hooks it names, the orphans."""
    out = {"pin_dir": root, "exists": os.path.isdir(root), "manifest": None, "problem": "",
           "hooks": 0, "policies": [], "orphans": []}
    if not out["exists"]:
        return out
    gen = None
    try:
        raw = pinned.read_blob(os.path.join(root, MANIFEST))
        if raw is not None:
            doc = parse_manifest(raw)
            gen = doc["generation"]
            out["manifest"] = {k: doc[k] for k in ("build", "generation", "ringbuf_bytes", "agent_pid", "written")
                               if k in doc}
            live = set()
            for path, entry in doc["files"].items():
                for pol in entry["policies"]:
                    out["policies"].append({"name": pol["name"], "file": path, "hooks": len(pol["hooks"])})
                    live |= {h["id"] for h in pol["hooks"]}
            out["hooks"] = len(live)
            store = PinStore.__new__(PinStore)
            store.root, store.generation = root.rstrip("/"), gen
            out["orphans"] = store.orphans(live)
    except (ManifestError, ValueError, OSError) as exc:
        out["problem"] = str(exc)
    if gen is None:
        out["orphans"] = [os.path.join(root, n) for n in sorted(os.listdir(root)) if n != MANIFEST]
    return out
