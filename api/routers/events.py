"""Citizen complaints (民生诉求): report an event, move it through its workflow, read it with its history.

- ``POST /events`` locates the event (by ``lon``/``lat``, or by ``building_code``) into district … building
  with the chain of ``GET /locate`` and answers 201 with the event and its ``Location``.
- ``POST /events/{code}/transitions`` applies one step of the workflow (`cim.event_workflow`); a step the
  workflow does not allow from the current state is 409 naming the allowed ones. Concurrent steps on one
  event are serialised by a row lock: the later one is judged against the state the earlier one left.
- ``GET /events/{code}``: the event, whether it is overdue, and every transition (who, when, note).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import get_pool
from api.errors import ApiError, bad_parameter, not_found, single_valued
from api.ogc_schemas import error
from api.routers.answer_models import ERROR_RESPONSES
from cim.codes import CodeError, validate
from cim.event_workflow import NEEDS_DEPARTMENT, EventStatus, TransitionRefused, allowed_targets
from cim.store.events import EventInputError, NewEvent, create_event, get_event, transition_event
from cim.store.fragments import PointError

router = APIRouter(tags=["Events"], dependencies=[Depends(single_valued)])

EventCode = Annotated[str, Path(pattern=r"^EV[0-9]{14}$", description="Event code: EV, date YYYYMMDD, 6 digits")]
Text = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"\S")]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
CONFLICT = error("The workflow does not allow this transition from the event's current state; the message "
                 "names the allowed target states")  # fmt: skip


class EventReport(BaseModel):
    """A new event. Give its place either as ``lon`` and ``lat`` (CRS84 degrees) or as ``building_code``."""

    model_config = ConfigDict(extra="forbid")

    category: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$", description="A category of `event_categories`")
    subcategory: Name | None = None
    description: Text
    lon: float | None = Field(None, ge=-180, le=180, allow_inf_nan=False)
    lat: float | None = Field(None, ge=-90, le=90, allow_inf_nan=False)
    building_code: str | None = Field(None, pattern=r"^[0-9]{19}$", description="19-digit building code")
    reporter_contact: str | None = Field(None, max_length=200)


class TransitionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: EventStatus
    actor: Name = Field(description="Who makes the step (person or office)")
    note: Text | None = None
    department: Name | None = Field(None, description=f"Required with, and only with, to={NEEDS_DEPARTMENT}")


class Transition(BaseModel):
    from_status: EventStatus
    to_status: EventStatus
    actor: str
    note: str | None
    department: str | None
    at: datetime


class EventLocation(BaseModel):
    lon: float
    lat: float
    x: float = Field(description="Easting in the storage CRS")
    y: float = Field(description="Northing in the storage CRS")
    srid: int


class Event(BaseModel):
    code: str
    category: str
    subcategory: str | None
    status: EventStatus
    allowed_transitions: list[EventStatus]
    reported_at: datetime
    updated_at: datetime
    due_at: datetime | None
    closed_at: datetime | None
    overdue: bool = Field(description="Still awaiting the city's work after due_at")
    department: str | None
    reopen_count: int
    description: str
    reporter_contact: str | None
    location: EventLocation
    district_code: str
    street_code: str
    community_code: str
    grid_code: str
    parcel_code: str | None
    building_code: str | None
    transitions: list[Transition] = Field(description="Every status change, oldest first")


def _event_body(row: dict[str, Any]) -> dict[str, Any]:
    location = {k: row.pop(k) for k in ("lon", "lat", "x", "y", "srid")}
    body = {**row, "location": location, "allowed_transitions": list(allowed_targets(row["status"]))}
    return Event.model_validate(body).model_dump(mode="json")


def _load(code: str) -> dict[str, Any]:
    with get_pool().connection() as conn:
        row = get_event(conn, code)
    if row is None:
        raise not_found(f"event {code}")
    return _event_body(row)


@router.post(
    "/events",
    summary="Report an event; it is located into district … building and gets a code",
    status_code=201,
    response_model=Event,
    responses={201: {"headers": {"Location": {"schema": {"type": "string"}, "description": "The event's URL"}}},
               400: ERROR_RESPONSES[400], 503: ERROR_RESPONSES[503]},
)  # fmt: skip
def report_event(report: EventReport) -> JSONResponse:
    if report.building_code is not None:
        if report.lon is not None or report.lat is not None:
            raise bad_parameter("building_code", "give either lon/lat or building_code, not both")
        try:
            validate(report.building_code, "building")
        except CodeError as exc:
            raise bad_parameter("building_code", str(exc)) from None
    elif report.lon is None:
        raise bad_parameter("lon", "missing; give lon and lat (CRS84) or building_code")
    elif report.lat is None:
        raise bad_parameter("lat", "missing; lon needs lat")
    new = NewEvent(**report.model_dump())
    try:
        with get_pool().connection() as conn:
            code = create_event(conn, new)
    except EventInputError as exc:
        raise bad_parameter(exc.field, str(exc)) from None
    except PointError as exc:
        raise bad_parameter("lon", f"the point cannot be located: {exc}") from None
    return JSONResponse(_load(code), status_code=201, headers={"Location": f"/events/{code}"})


@router.get(
    "/events/{code}",
    summary="An event with its transition history",
    response_model=Event,
    responses=ERROR_RESPONSES,
)
def read_event(code: EventCode) -> JSONResponse:
    return JSONResponse(_load(code))


@router.post(
    "/events/{code}/transitions",
    summary="Move an event one step through its workflow",
    response_model=Event,
    responses={**ERROR_RESPONSES, 409: CONFLICT},
)
def transition(code: EventCode, step: TransitionRequest) -> JSONResponse:
    if step.to == NEEDS_DEPARTMENT and step.department is None:
        raise bad_parameter("department", f"required with to={NEEDS_DEPARTMENT}: the department the case goes to")
    if step.to != NEEDS_DEPARTMENT and step.department is not None:
        raise bad_parameter("department", f"only given with to={NEEDS_DEPARTMENT}")
    try:
        with get_pool().connection() as conn:
            found = transition_event(conn, code, step.to, step.actor, step.note, step.department)
    except TransitionRefused as exc:
        raise ApiError(409, "Conflict", str(exc)) from None
    if not found:
        raise not_found(f"event {code}")
    return JSONResponse(_load(code))
