"""``GET /changes?from=&to=[&unit=]``: buildings added, altered and demolished between two dates, for the
yearly change survey (普查), as GeoJSON with a ``change`` property. The same query as ``cim changes``
(``cim.store.history.building_changes``): days are whole local days (China Standard Time, UTC+8), both
ends included; an altered or demolished building is drawn as its version at the change."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import shapely
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api.deps import get_pool
from api.errors import bad_parameter, single_valued
from api.point_params import unit_or_building_code
from api.routers.answer_models import ERROR_RESPONSES, GEOJSON_MEDIA_TYPE, ChangeCollection, GeoJSONResponse
from cim.codes import LEVEL_LENGTHS
from cim.crs import storage_to_lonlat
from cim.store.history import building_changes
from cim.store.unit_summary import UNIT_LEVELS

router = APIRouter(tags=["history"], dependencies=[Depends(single_valued)])

LOCAL_DAY_START = "T00:00:00+08:00"
"""Survey dates are local (China Standard Time) days, as in ``cim changes``."""
GEOJSON_DIGITS = 7
CHANGE_KINDS = ("added", "altered", "demolished")


def _to_lonlat(coords: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    lon, lat = storage_to_lonlat(coords[:, 0], coords[:, 1])
    return np.column_stack([lon, lat])


def _features(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """GeoJSON features (CRS84) of change rows; all footprints are transformed in one vectorised call."""
    footprints = shapely.from_wkb(np.array([r["footprint"] for r in rows], dtype=object))
    lonlat = shapely.set_precision(shapely.transform(footprints, _to_lonlat), 10.0**-GEOJSON_DIGITS)
    geometries = shapely.to_geojson(lonlat)
    return [
        {
            "type": "Feature",
            "id": f"{r['building_code']}/v{r['version']}/{r['change_type']}",
            "geometry": json.loads(g),
            "properties": {
                "change": r["change_type"],
                "building_code": r["building_code"],
                "version": r["version"],
                "name": r["name"],
                "use": r["use"],
                "height_m": r["height_m"],
                "storeys": r["storeys"],
                "changed_at": r["changed_at"].isoformat(),
            },
        }
        for r, g in zip(rows, geometries.tolist(), strict=True)
    ]


@router.get(
    "/changes",
    summary="Buildings added, altered and demolished between two dates (GeoJSON, `change` property)",
    response_model=None,
    response_class=GeoJSONResponse,
    responses={200: {"model": ChangeCollection}, 400: ERROR_RESPONSES[400], 503: ERROR_RESPONSES[503]},
)
def changes(
    start: Annotated[date, Query(alias="from", description="First day (YYYY-MM-DD, local time), included")],
    end: Annotated[date, Query(alias="to", description="Last day (YYYY-MM-DD, local time), included")],
    unit: Annotated[str | None, Query(description="Only within this district/street/community/grid code")] = None,
) -> Response:
    if end < start:
        raise bad_parameter("from", f"from {start} is after to {end}")
    if end >= date.max:
        raise bad_parameter("to", f"{end} is too far in the future")
    if unit is not None:
        unit_or_building_code(unit, parameter="unit")
        if len(unit) not in {LEVEL_LENGTHS[level] for level in UNIT_LEVELS}:
            raise bad_parameter("unit", f"{unit} is not a district, street, community or grid code")
    first = f"{start.isoformat()}{LOCAL_DAY_START}"
    after_last = f"{(end + timedelta(days=1)).isoformat()}{LOCAL_DAY_START}"
    with get_pool().connection() as conn:
        rows = building_changes(conn, first, after_last, unit)
    body = {
        "type": "FeatureCollection",
        "from": start.isoformat(),
        "to": end.isoformat(),
        "unit": unit,
        "counts": {kind: sum(1 for r in rows if r["change_type"] == kind) for kind in CHANGE_KINDS},
        "features": _features(rows) if rows else [],
    }
    return Response(content=json.dumps(body, ensure_ascii=False), media_type=GEOJSON_MEDIA_TYPE)
