"""The handling workflow of citizen complaints (民生诉求) as a state machine, written once for store and API.

    reported ──► dispatched ──► in_progress ──► resolved ──► closed
       │             │               ▲             │
       └─► rejected ◄┘               └─ reopened ◄─┘

- ``dispatched`` hands the case to a department (required with that transition).
- ``rejected`` (not a case for the city: duplicate, outside its remit, unfounded) is decided while the case is
  being triaged: from ``reported`` by the dispatcher, or from ``dispatched`` by the department that received
  it. Once work has started the case must be resolved; the reporter's recourse is reopening.
- ``resolved`` awaits the reporter's review: ``closed`` accepts it, ``reopened`` sends it back to work
  (``reopen_count`` counts these), whence only ``in_progress`` follows.
- ``closed`` and ``rejected`` are final (`FINISHED`, the same as ``cim.store.fragments.OPEN_EVENT``).

The statuses are exactly those the ``events.status`` CHECK constraint (migration 0001) allows, so the demo's
events are all valid states of this machine.

An event is *overdue* when it is still awaiting the city's work (`AWAITING_WORK`) after its ``due_at``,
which is ``reported_at`` plus its category's deadline (table ``event_categories``, migration 0011). A resolved
event is not overdue: the city has done its part, the review is the reporter's.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, cast, get_args

EventStatus = Literal["reported", "dispatched", "in_progress", "resolved", "reopened", "closed", "rejected"]
STATUSES: Final[tuple[EventStatus, ...]] = get_args(EventStatus)
INITIAL: Final[EventStatus] = "reported"

TRANSITIONS: Final[Mapping[EventStatus, tuple[EventStatus, ...]]] = MappingProxyType(
    {
        "reported": ("dispatched", "rejected"),
        "dispatched": ("in_progress", "rejected"),
        "in_progress": ("resolved",),
        "resolved": ("closed", "reopened"),
        "reopened": ("in_progress",),
        "closed": (),
        "rejected": (),
    }
)
"""Allowed target states from each state; every other (from, to) pair is refused."""

FINISHED: Final[tuple[EventStatus, ...]] = tuple(s for s in STATUSES if not TRANSITIONS[s])
AWAITING_WORK: Final[tuple[EventStatus, ...]] = ("reported", "dispatched", "in_progress", "reopened")
NEEDS_DEPARTMENT: Final[EventStatus] = "dispatched"
"""The one target state that takes a department (and requires it)."""

CODE_TIME_ZONE: Final = "Asia/Shanghai"
"""Event codes are ``EV`` + the local date of reporting (YYYYMMDD) + a 6-digit sequence number of that day,
the format of the demo data (``sample_data/events.py``)."""


class TransitionRefused(ValueError):
    """A transition the workflow does not allow from the event's current state."""

    def __init__(self, current: str, target: str) -> None:
        self.current = current
        self.target = target
        self.allowed = allowed_targets(current)
        super().__init__(refusal_message(current, target))


def allowed_targets(current: str) -> tuple[EventStatus, ...]:
    return TRANSITIONS.get(cast(EventStatus, current), ())


def refusal_message(current: str, target: str) -> str:
    allowed = allowed_targets(current)
    options = ", ".join(allowed) if allowed else "none (a final state)"
    return f"an event in state {current} cannot go to {target}; allowed from {current}: {options}"


def check_transition(current: str, target: str) -> None:
    """Raise `TransitionRefused` unless ``current → target`` is allowed."""
    if target not in allowed_targets(current):
        raise TransitionRefused(current, target)
