"""The city model's vocabularies, shared by ingest, API and tiles. The SQL CHECK constraints in
``cim/migrations`` list the same values (``tests/test_schema.py`` keeps them in step)."""

from __future__ import annotations

UNIT_LEVELS = ("district", "street", "community", "grid")

BUILDING_USES = (
    "residential",
    "commercial",
    "office",
    "industrial",
    "public",
    "education",
    "healthcare",
    "mixed",
    "other",
)
HEIGHT_SOURCES = ("survey", "dsm", "osm_height", "osm_levels", "default", "bim", "generated")

PIPE_NETWORKS = ("drainage", "rain", "sewage", "water", "gas", "power", "telecom", "heat")
PIPE_NODE_KINDS = ("manhole", "valve", "junction", "outfall", "inlet", "hydrant", "meter", "pump_station")

DEVICE_STATUSES = ("online", "offline", "fault", "retired")

EVENT_STATUSES = ("reported", "dispatched", "in_progress", "resolved", "reopened", "closed", "rejected")

# The city tables and the layer name each is loaded as (``cim ingest <layer>``).
CITY_TABLES = (
    "admin_units",
    "parcels",
    "buildings",
    "houses",
    "bim_models",
    "bim_storeys",
    "bim_elements",
    "pipe_nodes",
    "pipes",
    "devices",
    "observations",
    "events",
    "road_vertices",
    "roads",
    "pois",
)
