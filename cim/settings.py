"""Deployment settings, read from the environment (prefix ``CIM_``) once per process.

Decisions recorded here:
- ``CIM_HOME`` (default ``.cim`` in the working directory) holds everything generated: the embedded
  PostgreSQL cluster, generated sample data, rasters and tilesets. It is never committed.
- ``CIM_DATABASE_URL``: when set, that PostGIS is used (and migrated) and no cluster is started.
- ``CIM_STORAGE_SRID`` (default 4547, CGCS2000 / 3-degree Gauss-Krüger CM 114E): the projected CRS every
  geometry is stored in. It is fixed when the database is first migrated; a later mismatch is an error.
- ``CIM_HEIGHT_OFFSET_M`` (default 0): geoid undulation N added to orthometric heights (1985 National
  Height Datum) to get ellipsoidal heights for 3D Tiles (h = H + N). Around Shenzhen N is roughly -3 m;
  the true value is a survey fact of the deployment, so the code never guesses it.
- ``CIM_STOREY_HEIGHT_M`` (default 3.0): storey height used when only a storey count is known.
- ``CIM_CITY_CODE`` (default ``4403``, Shenzhen): the 4-digit province+city prefix of every unit, building
  and house code of this deployment. The code hierarchy and lengths (district 6 … house 25) are the
  product's model for every city; only this prefix changes, and the list of valid districts is enforced only
  for Shenzhen. A city outside China's GB/T 2260 numbering takes an unassigned province number (GB/T 2260
  uses 11–82), e.g. ``9901`` (the tests use it for Helsinki). Fixed at the first migration, like the SRID.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CITY_CODE_RE = re.compile(r"[1-9][0-9]{3}")
"""A province+city prefix: 4 ASCII digits, no leading zero (GB/T 2260 province numbers start at 11)."""


class Settings(BaseSettings):
    """All settings of one deployment; see the module docstring for what each means."""

    model_config = SettingsConfigDict(env_prefix="CIM_", extra="ignore")

    home: Path = Field(default=Path(".cim"))
    database_url: str | None = None
    storage_srid: int = 4547
    height_offset_m: float = 0.0
    storey_height_m: float = 3.0
    city_code: str = "4403"
    """Province+city prefix (4 digits) of every code in this deployment; see the module docstring."""
    pg_user: str = "cim-pg"
    """System user that runs the embedded PostgreSQL server when the CLI runs as root."""
    pg_fast: bool = False
    """Throwaway clusters (tests) trade durability for speed: fsync and synchronous_commit off."""
    statement_timeout_ms: int = 30000
    tile_cache_mb: int = 128
    """In-memory LRU of rendered tiles (MVT, raster) and gzipped static tiles, per server process."""
    tile_version_ttl_s: float = 1.0
    """Tile caches re-read the per-table change counters at most this often: a commit shows in tiles within it."""
    answer_cache_mb: int = 64
    """In-memory LRU of CIM answers (parcel contents, building profiles, unit summaries), per server process."""
    answer_version_ttl_s: float = 0.25
    """The answer cache re-reads the change counters at most this often: a commit shows in answers within it."""
    tile_max_age_s: int = 60
    """``Cache-Control: max-age`` of vector and raster tiles and their TileJSON (clients revalidate by ETag after)."""
    tileset_json_max_age_s: int = 10
    """``max-age`` of a 3D tileset's root ``tileset.json``: short, it names the new tilesetVersion after a rebuild."""
    tileset_content_max_age_s: int = 600
    """``max-age`` of 3D Tiles content requested without the current ``?v=<tilesetVersion>`` (with it: 1 year)."""

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().absolute()

    @field_validator("storage_srid")
    @classmethod
    def _positive_srid(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("CIM_STORAGE_SRID must be a positive EPSG code")
        return v

    @field_validator("city_code")
    @classmethod
    def _four_digit_city(cls, v: str) -> str:
        if not CITY_CODE_RE.fullmatch(v):
            raise ValueError(f"CIM_CITY_CODE must be 4 digits (province 2, city 2), e.g. 4403; got {v!r}")
        return v


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests clear the cache after changing the environment)."""
    return Settings()
