"""The schema and the Python vocabularies agree, and the indexes the API relies on exist."""

from __future__ import annotations

import re

import pytest

from cim import model
from cim.db import connect
from cim.settings import Settings

VOCABULARIES = [
    ("buildings", "use", model.BUILDING_USES),
    ("buildings", "height_source", model.HEIGHT_SOURCES),
    ("pipe_nodes", "network", model.PIPE_NETWORKS),
    ("pipe_nodes", "kind", model.PIPE_NODE_KINDS),
    ("devices", "status", model.DEVICE_STATUSES),
    ("events", "status", model.EVENT_STATUSES),
    ("admin_units", "level", model.UNIT_LEVELS),
]


@pytest.mark.parametrize(("table", "column", "values"), VOCABULARIES)
def test_check_constraints_list_the_same_values(
    settings: Settings, table: str, column: str, values: tuple[str, ...]
) -> None:
    with connect(settings) as conn:
        defs = [
            r[0]
            for r in conn.execute(
                "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
                "WHERE t.relname = %s AND c.contype = 'c'",
                (table,),
            ).fetchall()
        ]
    listing = [d for d in defs if re.search(rf"\b{column}\b = ANY", d)]
    assert listing, f"no CHECK on {table}.{column} in {defs}"
    in_sql = set(re.findall(r"'([a-z_]+)'::text", listing[0]))
    assert in_sql == set(values)


def test_every_geometry_has_a_gist_index_and_every_city_table_a_district_code(settings: Settings) -> None:
    with connect(settings) as conn:
        geoms = conn.execute(
            "SELECT f_table_name, f_geometry_column FROM geometry_columns WHERE f_table_schema = 'public' "
            "AND f_table_name NOT IN ('building_versions')"
        ).fetchall()
        indexed = {
            (r[0], r[1])
            for r in conn.execute(
                "SELECT t.relname, a.attname FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
                "JOIN pg_class ix ON ix.oid = i.indexrelid JOIN pg_am am ON am.oid = ix.relam "
                "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(i.indkey) WHERE am.amname = 'gist'"
            ).fetchall()
        }
        for table in model.CITY_TABLES:
            cols = {
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
                ).fetchall()
            }
            assert "district_code" in cols, table
        time_index = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'observations' AND indexdef LIKE '%(observed_at)%'"
        ).fetchone()
    missing = [g for g in geoms if (g[0], g[1]) not in indexed]
    assert not missing
    assert time_index == (1,)
