"""EventMatcher, the one matcher behind `tetra getevents` filters and the export allow/deny lists."""
from __future__ import annotations

import dataclasses
import re

import pytest

from tetrahost.control.filters import parse_filter as parse_getevents_filter
from tetrahost.events.matcher import EventMatcher
from tetrahost.events.meta import EventMeta
from tetrahost.export.filters import parse_filter as parse_export_filter

CURL = EventMeta(kind="process_exec", pid=10, binary="/usr/bin/curl", exec_id="a", ktime=0,
                 unit="nginx.service", workload_namespace="system.slice")
MINER = EventMeta(kind="process_kprobe", pid=11, binary="/tmp/xmrig", exec_id="b", ktime=0,
                  container="abcdef0123", workload_namespace="docker", policy="block-cryptominers")
BARE = EventMeta(kind="process_exit", pid=12, binary="", exec_id="", ktime=0)
EVENTS = (CURL, MINER, BARE)


def matched(m: EventMatcher) -> list[int]:
    return [e.pid for e in EVENTS if m.matches(e)]


def test_no_condition_matches_everything():
    assert matched(EventMatcher()) == [10, 11, 12]


@pytest.mark.parametrize("condition", ["kinds", "pids", "policies", "namespaces", "units"])
def test_a_condition_given_as_an_empty_set_matches_nothing(condition):
    assert matched(EventMatcher(**{condition: frozenset()})) == []


def test_conditions_and_values():
    assert matched(EventMatcher(kinds=frozenset({"process_exec", "process_kprobe"}))) == [10, 11]
    assert matched(EventMatcher(kinds=frozenset({"process_exec", "process_kprobe"}),
                                pids=frozenset({11, 12}))) == [11]                       # AND
    assert matched(EventMatcher(binary=(re.compile("curl$"), re.compile("^/tmp/")))) == [10, 11]   # OR
    assert matched(EventMatcher(namespaces=frozenset({""}))) == [12]                     # "" = no namespace


def test_unit_names_and_globs_are_one_condition():
    assert matched(EventMatcher(units=frozenset({"nginx"}))) == []          # names are exact
    assert matched(EventMatcher(unit_globs=("nginx*",))) == [10]
    assert matched(EventMatcher(units=frozenset({""}), unit_globs=("nginx*",))) == [10, 11, 12]


def test_containers_are_prefixes_and_an_event_without_one_never_matches():
    assert matched(EventMatcher(containers=("abc",))) == [11]
    assert matched(EventMatcher(containers=("",))) == [11]


def test_both_front_ends_build_the_same_matcher():
    getevents = parse_getevents_filter({"event_types": ["PROCESS_KPROBE"], "pids": [11],
                                        "policy_names": ["block-cryptominers"], "namespaces": ["docker"],
                                        "binary": ["xmrig"]})
    export = parse_export_filter({"event_set": ["PROCESS_KPROBE"], "pid": [11],
                                  "policy_names": ["block-cryptominers"], "namespace": ["docker"],
                                  "binary_regex": ["xmrig"]})
    # regular expressions are compiled per front-end (one alternation for the export keys)
    assert dataclasses.replace(getevents, binary=()) == dataclasses.replace(export, binary=())
    assert matched(getevents) == matched(export) == [11]


def test_units_are_globs_for_getevents_and_exact_names_for_export():
    assert matched(parse_getevents_filter({"units": ["nginx*"]})) == [10]
    assert matched(parse_export_filter({"unit": ["nginx*"]})) == []
    assert matched(parse_export_filter({"unit": ["nginx.service"]})) == [10]
