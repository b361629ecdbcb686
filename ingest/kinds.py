"""The city layers ``cim ingest <layer>`` loads, named without importing how: the command line lists them
when it starts, where importing the readers (GDAL, pandas) would cost most of a second."""

from __future__ import annotations

VECTOR_LAYERS = ("admin", "parcels", "buildings", "pipes", "devices", "events")
TABLE_LAYERS = ("houses", "observations")
LAYERS = VECTOR_LAYERS + TABLE_LAYERS
