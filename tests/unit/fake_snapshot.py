"""A status snapshot of fake agent state, taken as the agent's loop takes it."""
from __future__ import annotations

from tetrahost.daemon import Counters
from tetrahost.runtime.snapshot import AgentSnapshot, SnapshotInputs, StatusBoard, take


def inputs(counters=None, policies=None, features=None, cache=(), costs=(), sections=None) -> SnapshotInputs:
    return SnapshotInputs(node_name="test-node", counters=counters or Counters(), cache=list(cache),
                          features=lambda: features, in_use=lambda: ["process sensor: "],
                          policies=lambda: policies, pins=lambda: None, delivery=lambda: None,
                          costs=lambda: list(costs), sections=dict(sections or {}))


def snapshot(**kw) -> AgentSnapshot:
    return take(inputs(**kw), with_costs=True)


class TurnedBoard(StatusBoard):
    """A StatusBoard whose fresh() takes the snapshot at once (no loop to wake)."""

    def fresh(self, timeout: float = 2.0, costs: bool = False):
        return take(self.inputs, with_costs=costs)


def board(**kw) -> TurnedBoard:
    return TurnedBoard(inputs(**kw))
