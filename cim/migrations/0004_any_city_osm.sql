-- Any city, and what OpenStreetMap brings: a walkable road network and service/device POIs.
--
-- Codes: the hierarchy and lengths (district 6 … house 25) are the model for every city; the first four
-- digits (province+city) are the deployment's CIM_CITY_CODE, fixed at the first migration like the SRID.
-- {{CITY_CODE_RE}} is rendered by cim.migrate from the validated city code (Shenzhen keeps its district list
-- 03..11; elsewhere any district but 00). The domain keeps its historical name so later migrations that
-- use it go on working.
ALTER DOMAIN shenzhen_code DROP CONSTRAINT shenzhen_code_check;
ALTER DOMAIN shenzhen_code ADD CONSTRAINT city_code_check CHECK (VALUE ~ '{{CITY_CODE_RE}}');

-- ---------------------------------------------------------------------------------------------------------
-- Road network, pgRouting-compatible (pgr_dijkstra('SELECT id, source, target, cost, reverse_cost FROM roads',
-- …)). Vertices are OSM nodes where ways meet or end (id = the OSM node id); an edge is the piece of one OSM
-- way between two vertices (id = way id * 10000 + its piece number). cost / reverse_cost are walking seconds
-- along / against the drawing direction; -1 means not walkable that way (pgRouting's convention).
-- Unit codes are those of the grid containing the vertex, or the edge's midpoint.
CREATE TABLE road_vertices (
    id bigint PRIMARY KEY CHECK (id > 0),
    geom geometry(Point, {{SRID}}) NOT NULL,
    district_code text NOT NULL REFERENCES admin_units (code),
    street_code text NOT NULL,
    community_code text NOT NULL,
    grid_code text NOT NULL REFERENCES admin_units (code),
    source_file text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT road_vertices_units_nested CHECK (
        left(grid_code, 12) = community_code AND left(community_code, 9) = street_code
        AND left(street_code, 6) = district_code
    )
);
CREATE INDEX road_vertices_geom_idx ON road_vertices USING gist (geom);
CREATE INDEX road_vertices_grid_idx ON road_vertices (grid_code);

CREATE TABLE roads (
    id bigint PRIMARY KEY CHECK (id > 0),
    osm_way_id bigint NOT NULL CHECK (osm_way_id > 0),
    seq integer NOT NULL CHECK (seq >= 0 AND seq < 10000),
    source bigint NOT NULL REFERENCES road_vertices (id),
    target bigint NOT NULL REFERENCES road_vertices (id),
    highway text NOT NULL CHECK (highway ~ '^[a-z][a-z0-9_]{0,39}$'),
    name text,
    length_m double precision NOT NULL CHECK (length_m > 0),
    cost double precision NOT NULL CHECK (cost = -1 OR cost > 0),
    reverse_cost double precision NOT NULL CHECK (reverse_cost = -1 OR reverse_cost > 0),
    oneway_car smallint NOT NULL DEFAULT 0 CHECK (oneway_car IN (-1, 0, 1)),
    oneway_foot smallint NOT NULL DEFAULT 0 CHECK (oneway_foot IN (-1, 0, 1)),
    geom geometry(LineString, {{SRID}}) NOT NULL,
    district_code text NOT NULL REFERENCES admin_units (code),
    street_code text NOT NULL,
    community_code text NOT NULL,
    grid_code text NOT NULL REFERENCES admin_units (code),
    attributes jsonb NOT NULL DEFAULT '{}',
    source_file text,
    source_id text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (osm_way_id, seq),
    CONSTRAINT roads_id_from_way CHECK (id = osm_way_id * 10000 + seq),
    CONSTRAINT roads_walkable_somehow CHECK (cost > 0 OR reverse_cost > 0),
    CONSTRAINT roads_geom_valid CHECK (ST_NPoints(geom) >= 2 AND ST_Length(geom) > 0),
    CONSTRAINT roads_units_nested CHECK (
        left(grid_code, 12) = community_code AND left(community_code, 9) = street_code
        AND left(street_code, 6) = district_code
    )
);
CREATE INDEX roads_geom_idx ON roads USING gist (geom);
CREATE INDEX roads_source_idx ON roads (source);
CREATE INDEX roads_target_idx ON roads (target);
CREATE INDEX roads_grid_idx ON roads (grid_code);
CREATE INDEX roads_district_idx ON roads (district_code);
CREATE INDEX roads_file_idx ON roads (source_file);

-- ---------------------------------------------------------------------------------------------------------
-- Points of interest that are devices or public services (charging piles, cameras, hydrants, government
-- service halls, clinics, …; the mapping from OSM tags is in ingest/osm.py). osm_id is n/w/r + the OSM id;
-- an area's point is a point on its surface. building_code: the building whose footprint contains it.
CREATE TABLE pois (
    osm_id text PRIMARY KEY CHECK (osm_id ~ '^[nwr][0-9]+$'),
    kind text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{1,39}$'),
    name text,
    geom geometry(Point, {{SRID}}) NOT NULL,
    building_code text REFERENCES buildings (building_code) ON DELETE SET NULL,
    district_code text NOT NULL REFERENCES admin_units (code),
    street_code text NOT NULL,
    community_code text NOT NULL,
    grid_code text NOT NULL REFERENCES admin_units (code),
    attributes jsonb NOT NULL DEFAULT '{}',
    source_file text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pois_units_nested CHECK (
        left(grid_code, 12) = community_code AND left(community_code, 9) = street_code
        AND left(street_code, 6) = district_code
    )
);
CREATE INDEX pois_geom_idx ON pois USING gist (geom);
CREATE INDEX pois_kind_idx ON pois (kind);
CREATE INDEX pois_grid_idx ON pois (grid_code);
CREATE INDEX pois_building_idx ON pois (building_code);
CREATE INDEX pois_file_idx ON pois (source_file);
