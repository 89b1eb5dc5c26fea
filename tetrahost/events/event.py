"""One typed event on its way to the sinks.

The enrichment stage (tetrahost.events.enrich) makes one Event per kernel
record worth exporting: its EventMeta (what filters, journald fields, metrics
and the control socket read), and how to produce its forms:

  json     the Tetragon JSON line (file, journald's TETRAGON_JSON, stdout,
           Elasticsearch, the control socket)
  data     the same event as a dict, built from the renderer's own objects,
           never parsed back from the line (field filters, compact)
  compact  the one-line human form (stdout compact, journald's MESSAGE)

Each form is produced once, the first time a sink asks, and shared by every
sink after it.  The renderers keep state of the loop's thread (the process
cache, time and namespace caches), so every form is made on that thread: a
sink that writes inline reads it as it goes; an exporter that queues the
batch for its own thread makes the forms it will read as it queues it
(make_forms, from ThreadedSink), and only if it does queue it: a batch an
exporter drops (its queue full) costs no rendering, and a form nobody reads
is never produced.  Once every sink had the batch the agent releases it.

Sinks written for (json_line, meta) pairs still work: an Event unpacks as
one (`for line, meta in batch`) and indexes as one (event[1] is the meta).
"""
from __future__ import annotations

from tetrahost.events.meta import EventMeta

FORMS = ("json", "data", "compact")


def _not_prepared(*_):
    raise ValueError("a form of this event was not prepared before it was handed to the sinks "
                     "(a queueing sink's `wants` must name every form it reads)")


class Event:
    __slots__ = ("meta", "_json", "_data", "_compact", "_render_json", "_render_data", "_source", "pos",
                 "_render_compact")

    def __init__(self, meta: EventMeta, render_json=None, render_data=None, source=(),
                 json: str | None = None, data: dict | None = None, render_compact=None):
        """render_json(*source) -> str and render_data(*source) -> dict make
        the forms; json, data: forms that exist already (rate_limit_info);
        render_compact(*source) -> str: the compact line, where the renderer
        makes it from its own pieces (process events) rather than from `data`."""
        self.meta = meta
        self._json = json
        self._data = data
        self._compact = None
        self._render_json = render_json
        self._render_data = render_data
        self._source = source
        self._render_compact = render_compact
        # The ring buffer position just after the record it was made of (0: not
        # from the ring; negative: minus its position in a replaced generation's
        # ring, read once at an upgrade): how far an exporter that wrote it got
        # (export/delivery.py).
        self.pos = 0

    @property
    def json(self) -> str:
        text = self._json
        if text is None:
            text = self._json = self._render_json(*self._source)
        return text

    @property
    def data(self) -> dict:
        d = self._data
        if d is None:
            if self._render_data is None:
                raise ValueError(f"{self.meta.kind}: no dict form")
            d = self._data = self._render_data(*self._source)
        return d

    @property
    def json_made(self) -> str | None:
        """The line if it was produced already, else None (without producing it)."""
        return self._json

    @property
    def compact(self) -> str:
        """The compact line ("" for a kind it cannot show: the caller falls back to JSON)."""
        text = self._compact
        if text is None:
            if self._render_compact is not None:
                text = self._render_compact(*self._source)
            else:
                try:
                    text = _compact_of(self)
                except ValueError:          # CompactError is one: a kind it cannot show
                    text = ""
            self._compact = text
        return text

    def make(self, forms) -> None:
        """Produce `forms` now (names from FORMS), on the loop's thread.  The
        compact line's readers fall back to the JSON line for a kind it cannot
        show, so that one comes with it then."""
        if forms == ("json",):
            if self._json is None:
                self._json = self._render_json(*self._source)
            return
        for form in forms:
            getattr(self, form)
        if "compact" in forms and not self._compact:
            self.json

    def release(self) -> None:
        """Let go of what the forms are made from (the record, its hook, the
        process): a queued event holds only its forms.  A form asked for
        later, i.e. not made when it was queued, is an error."""
        self._source = ()
        self._render_json = self._render_data = _not_prepared
        if self._render_compact is not None:
            self._render_compact = _not_prepared

    # -- as a (json_line, meta) pair -------------------------------------------------
    def __iter__(self):
        return iter((self.json, self.meta))

    def __getitem__(self, i):
        return self.meta if i == 1 else (self.json, self.meta)[i]

    def __len__(self) -> int:
        return 2

    def __repr__(self) -> str:
        return f"Event({self.meta.kind}, pid {self.meta.pid})"


def _compact_of(event: Event) -> str:
    # Imported on first use (the exporters import this module), then bound here.
    global _compact_of
    from tetrahost.export.compact import compact_of
    _compact_of = compact_of
    return compact_of(event)


def make_forms(batch, forms) -> None:
    """The forms of each Event of a batch about to be queued (see the module
    docstring); (line, meta) pairs have theirs."""
    if forms and batch and type(batch[0]) is Event:
        for event in batch:
            event.make(forms)


def metas_of(batch) -> list[EventMeta]:
    """The EventMeta of each item of a batch of Events (or of (line, meta) pairs)."""
    if batch and type(batch[0]) is Event:
        return [event.meta for event in batch]
    return [item[1] for item in batch]
