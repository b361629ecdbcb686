-- The city schema. Geometries are in the storage CRS (EPSG:{{SRID}}), metres.
-- Unit codes follow the Shenzhen address rule: district 6 digits, street 9, community 12, grid 14,
-- building 19, house 25; every code starts with the code of the unit containing it.
-- Every city table carries district_code (a future distribution column) and the codes of its units.

CREATE EXTENSION IF NOT EXISTS postgis;

CREATE DOMAIN shenzhen_code AS text
    CHECK (VALUE ~ '^4403(0[3-9]|1[01])[0-9]*$');

-- ---------------------------------------------------------------------------------------------------------
-- Administrative units: 区 district > 街道 street > 社区 community > 网格 grid
CREATE TABLE admin_units (
    code shenzhen_code PRIMARY KEY,
    level text NOT NULL CHECK (level IN ('district', 'street', 'community', 'grid')),
    name text NOT NULL CHECK (name <> ''),
    parent_code text REFERENCES admin_units (code) DEFERRABLE INITIALLY DEFERRED,
    district_code text GENERATED ALWAYS AS (left(code, 6)) STORED,
    street_code text GENERATED ALWAYS AS (CASE WHEN length(code) >= 9 THEN left(code, 9) END) STORED,
    community_code text GENERATED ALWAYS AS (CASE WHEN length(code) >= 12 THEN left(code, 12) END) STORED,
    geom geometry(MultiPolygon, {{SRID}}) NOT NULL,
    area_m2 double precision GENERATED ALWAYS AS (ST_Area(geom)) STORED,
    attributes jsonb NOT NULL DEFAULT '{}',
    source_file text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT admin_units_code_length CHECK (
        length(code) = CASE level WHEN 'district' THEN 6 WHEN 'street' THEN 9 WHEN 'community' THEN 12 ELSE 14 END
    ),
    CONSTRAINT admin_units_code_segments CHECK (
        (level = 'district' OR right(code, CASE level WHEN 'grid' THEN 2 ELSE 3 END) !~ '^0+$')
    ),
    CONSTRAINT admin_units_parent_prefix CHECK (
        (level = 'district' AND parent_code IS NULL)
        OR (level <> 'district' AND parent_code = left(code, length(code) - CASE level WHEN 'grid' THEN 2 ELSE 3 END))
    ),
    CONSTRAINT admin_units_geom_valid CHECK (ST_IsValid(geom) AND NOT ST_IsEmpty(geom))
);
CREATE INDEX admin_units_geom_idx ON admin_units USING gist (geom);
CREATE INDEX admin_units_level_idx ON admin_units (level, code);
CREATE INDEX admin_units_parent_idx ON admin_units (parent_code);

-- ---------------------------------------------------------------------------------------------------------
-- Land parcels (宗地) with planning controls. Unit codes are those of the unit containing the parcel's
-- interior point (ST_PointOnSurface), assigned by the load step.
CREATE TABLE parcels (
    code text PRIMARY KEY CHECK (code ~ '^[A-Z][0-9]{3}-[0-9]{4}$'),
    name text,
    land_use text NOT NULL CHECK (land_use ~ '^[A-Z][A-Z0-9+]{0,15}$'),
    far_limit double precision CHECK (far_limit > 0 AND far_limit < 100),
    height_limit_m double precision CHECK (height_limit_m > 0 AND height_limit_m < 1000),
    coverage_limit double precision CHECK (coverage_limit > 0 AND coverage_limit <= 1),
    approved_at date,
    geom geometry(MultiPolygon, {{SRID}}) NOT NULL,
    area_m2 double precision GENERATED ALWAYS AS (ST_Area(geom)) STORED,
    district_code text NOT NULL REFERENCES admin_units (code),
    street_code text NOT NULL,
    community_code text NOT NULL,
    grid_code text NOT NULL REFERENCES admin_units (code),
    attributes jsonb NOT NULL DEFAULT '{}',
    source_file text,
    source_id text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT parcels_units_nested CHECK (
        left(grid_code, 12) = community_code AND left(community_code, 9) = street_code
        AND left(street_code, 6) = district_code
    ),
    CONSTRAINT parcels_geom_valid CHECK (ST_IsValid(geom) AND NOT ST_IsEmpty(geom))
);
CREATE INDEX parcels_geom_idx ON parcels USING gist (geom);
CREATE INDEX parcels_grid_idx ON parcels (grid_code);
CREATE INDEX parcels_district_idx ON parcels (district_code);

-- ---------------------------------------------------------------------------------------------------------
-- Buildings (楼栋). The 19-digit code carries the grid it lies in, so all unit codes derive from it.
-- The table holds the current version of each building; earlier versions and demolished buildings are in
-- building_history (kept by triggers), and building_versions shows both for "as of" questions.
CREATE TABLE buildings (
    building_code shenzhen_code PRIMARY KEY
        CHECK (length(building_code) = 19 AND right(building_code, 5) <> '00000'),
    name text,
    use text NOT NULL CHECK (use IN ('residential', 'commercial', 'office', 'industrial', 'public',
                                     'education', 'healthcare', 'mixed', 'other')),
    height_m double precision NOT NULL CHECK (height_m > 0 AND height_m < 1000),
    height_source text NOT NULL DEFAULT 'survey'
        CHECK (height_source IN ('survey', 'dsm', 'osm_height', 'osm_levels', 'default', 'bim', 'generated')),
    storeys integer NOT NULL CHECK (storeys >= 1 AND storeys < 300),
    ground_elevation_m double precision NOT NULL DEFAULT 0 CHECK (ground_elevation_m BETWEEN -500 AND 9000),
    footprint geometry(MultiPolygon, {{SRID}}) NOT NULL,
    footprint_area_m2 double precision GENERATED ALWAYS AS (ST_Area(footprint)) STORED,
    floor_area_m2 double precision GENERATED ALWAYS AS (ST_Area(footprint) * storeys) STORED,
    district_code text GENERATED ALWAYS AS (left(building_code, 6)) STORED,
    street_code text GENERATED ALWAYS AS (left(building_code, 9)) STORED,
    community_code text GENERATED ALWAYS AS (left(building_code, 12)) STORED,
    grid_code text GENERATED ALWAYS AS (left(building_code, 14)) STORED REFERENCES admin_units (code),
    parcel_code text REFERENCES parcels (code) ON DELETE SET NULL,
    attributes jsonb NOT NULL DEFAULT '{}',
    source_file text,
    source_id text,
    valid_from timestamptz NOT NULL DEFAULT now(),
    valid_to timestamptz CHECK (valid_to IS NULL OR valid_to > valid_from),
    version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT buildings_footprint_valid CHECK (ST_IsValid(footprint) AND NOT ST_IsEmpty(footprint))
);
CREATE INDEX buildings_footprint_idx ON buildings USING gist (footprint);
CREATE INDEX buildings_grid_idx ON buildings (grid_code);
CREATE INDEX buildings_parcel_idx ON buildings (parcel_code);
CREATE INDEX buildings_district_idx ON buildings (district_code);
CREATE INDEX buildings_source_idx ON buildings (source_file, source_id);

CREATE TABLE building_history (
    building_code text NOT NULL,
    version integer NOT NULL,
    change text NOT NULL CHECK (change IN ('altered', 'demolished')),
    name text,
    use text NOT NULL,
    height_m double precision NOT NULL,
    height_source text NOT NULL,
    storeys integer NOT NULL,
    ground_elevation_m double precision NOT NULL,
    footprint geometry(MultiPolygon, {{SRID}}) NOT NULL,
    district_code text NOT NULL,
    street_code text NOT NULL,
    community_code text NOT NULL,
    grid_code text NOT NULL,
    parcel_code text,
    attributes jsonb NOT NULL,
    source_file text,
    source_id text,
    valid_from timestamptz NOT NULL,
    valid_to timestamptz NOT NULL CHECK (valid_to >= valid_from),
    PRIMARY KEY (building_code, version)
);
CREATE INDEX building_history_footprint_idx ON building_history USING gist (footprint);
CREATE INDEX building_history_valid_idx ON building_history (valid_to, valid_from);

-- Archive the old row when a building really changes (a load of unchanged data changes nothing: the
-- update is skipped, so versions and timestamps stay). A new version starts now, or at the valid_from the
-- update supplies if that is later than the old one.
CREATE FUNCTION buildings_keep_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO building_history
        SELECT OLD.building_code, OLD.version, 'demolished', OLD.name, OLD.use, OLD.height_m,
               OLD.height_source, OLD.storeys, OLD.ground_elevation_m, OLD.footprint, OLD.district_code,
               OLD.street_code, OLD.community_code, OLD.grid_code, OLD.parcel_code, OLD.attributes,
               OLD.source_file, OLD.source_id, OLD.valid_from, greatest(now(), OLD.valid_from);
        RETURN OLD;
    END IF;
    IF (NEW.name, NEW.use, NEW.height_m, NEW.height_source, NEW.storeys, NEW.ground_elevation_m,
        ST_AsEWKB(NEW.footprint), NEW.parcel_code, NEW.attributes, NEW.source_file, NEW.source_id)
       IS NOT DISTINCT FROM
       (OLD.name, OLD.use, OLD.height_m, OLD.height_source, OLD.storeys, OLD.ground_elevation_m,
        ST_AsEWKB(OLD.footprint), OLD.parcel_code, OLD.attributes, OLD.source_file, OLD.source_id) THEN
        RETURN NULL;  -- nothing changed: skip the update
    END IF;
    INSERT INTO building_history
    SELECT OLD.building_code, OLD.version, 'altered', OLD.name, OLD.use, OLD.height_m, OLD.height_source,
           OLD.storeys, OLD.ground_elevation_m, OLD.footprint, OLD.district_code, OLD.street_code,
           OLD.community_code, OLD.grid_code, OLD.parcel_code, OLD.attributes, OLD.source_file,
           OLD.source_id, OLD.valid_from, greatest(now(), OLD.valid_from);
    NEW.version := OLD.version + 1;
    NEW.valid_from := CASE WHEN NEW.valid_from > OLD.valid_from THEN NEW.valid_from
                           ELSE greatest(now(), OLD.valid_from) END;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
CREATE TRIGGER buildings_history_update BEFORE UPDATE ON buildings
    FOR EACH ROW EXECUTE FUNCTION buildings_keep_history();
CREATE TRIGGER buildings_history_delete BEFORE DELETE ON buildings
    FOR EACH ROW EXECUTE FUNCTION buildings_keep_history();

-- Every version of every building with its validity interval [valid_from, valid_to).
CREATE VIEW building_versions AS
    SELECT building_code, version, NULL::text AS change, name, use, height_m, height_source, storeys,
           ground_elevation_m, footprint, district_code, street_code, community_code, grid_code,
           parcel_code, attributes, source_file, source_id, valid_from, valid_to
      FROM buildings
    UNION ALL
    SELECT building_code, version, change, name, use, height_m, height_source, storeys,
           ground_elevation_m, footprint, district_code, street_code, community_code, grid_code,
           parcel_code, attributes, source_file, source_id, valid_from, valid_to
      FROM building_history;

-- ---------------------------------------------------------------------------------------------------------
-- Houses (房屋): 25-digit codes whose first 19 digits are the building's.
CREATE TABLE houses (
    house_code shenzhen_code PRIMARY KEY
        CHECK (length(house_code) = 25 AND right(house_code, 6) <> '000000'),
    building_code text GENERATED ALWAYS AS (left(house_code, 19)) STORED
        REFERENCES buildings (building_code) ON DELETE CASCADE,
    district_code text GENERATED ALWAYS AS (left(house_code, 6)) STORED,
    street_code text GENERATED ALWAYS AS (left(house_code, 9)) STORED,
    community_code text GENERATED ALWAYS AS (left(house_code, 12)) STORED,
    grid_code text GENERATED ALWAYS AS (left(house_code, 14)) STORED,
    storey integer NOT NULL CHECK (storey BETWEEN -20 AND 300 AND storey <> 0),
    area_m2 double precision NOT NULL CHECK (area_m2 > 0 AND area_m2 < 100000),
    use text,
    attributes jsonb NOT NULL DEFAULT '{}',
    source_file text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX houses_building_idx ON houses (building_code);
CREATE INDEX houses_grid_idx ON houses (grid_code);

-- ---------------------------------------------------------------------------------------------------------
-- BIM elements (IFC products), one row per element with its mesh in world coordinates of the storage CRS.
CREATE TABLE bim_elements (
    ifc_guid text PRIMARY KEY CHECK (ifc_guid ~ '^[0-9A-Za-z_$]{22}$'),
    building_code text NOT NULL REFERENCES buildings (building_code) ON DELETE CASCADE,
    ifc_class text NOT NULL CHECK (ifc_class ~ '^Ifc[A-Za-z]+$'),
    name text,
    storey text,
    storey_elevation_m double precision,
    properties jsonb NOT NULL DEFAULT '{}',
    quantities jsonb NOT NULL DEFAULT '{}',
    mesh geometry(TinZ, {{SRID}}),
    district_code text GENERATED ALWAYS AS (left(building_code, 6)) STORED,
    grid_code text GENERATED ALWAYS AS (left(building_code, 14)) STORED,
    source_file text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bim_elements_building_idx ON bim_elements (building_code);
CREATE INDEX bim_elements_mesh_idx ON bim_elements USING gist (mesh gist_geometry_ops_nd);

-- ---------------------------------------------------------------------------------------------------------
-- Underground pipe networks. Node points carry Z = ground (cover) elevation; pipe lines carry Z = invert
-- elevation. A pipe and both its end nodes belong to the same network (composite foreign keys).
CREATE TABLE pipe_nodes (
    code text PRIMARY KEY CHECK (code ~ '^[A-Z][A-Z0-9_-]{1,39}$'),
    network text NOT NULL
        CHECK (network IN ('drainage', 'rain', 'sewage', 'water', 'gas', 'power', 'telecom', 'heat')),
    kind text NOT NULL CHECK (kind IN ('manhole', 'valve', 'junction', 'outfall', 'inlet', 'hydrant',
                                       'meter', 'pump_station')),
    ground_elevation_m double precision NOT NULL,
    invert_elevation_m double precision NOT NULL,
    depth_m double precision GENERATED ALWAYS AS (ground_elevation_m - invert_elevation_m) STORED,
    geom geometry(PointZ, {{SRID}}) NOT NULL,
    district_code text NOT NULL REFERENCES admin_units (code),
    street_code text NOT NULL,
    community_code text NOT NULL,
    grid_code text NOT NULL REFERENCES admin_units (code),
    attributes jsonb NOT NULL DEFAULT '{}',
    source_file text,
    source_id text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (code, network),
    CONSTRAINT pipe_nodes_invert_below_ground CHECK (invert_elevation_m <= ground_elevation_m),
    CONSTRAINT pipe_nodes_units_nested CHECK (
        left(grid_code, 12) = community_code AND left(community_code, 9) = street_code
        AND left(street_code, 6) = district_code
    )
);
CREATE INDEX pipe_nodes_geom_idx ON pipe_nodes USING gist (geom);
CREATE INDEX pipe_nodes_grid_idx ON pipe_nodes (grid_code);
CREATE INDEX pipe_nodes_network_idx ON pipe_nodes (network, kind);

CREATE TABLE pipes (
    code text PRIMARY KEY CHECK (code ~ '^[A-Z][A-Z0-9_-]{1,39}$'),
    network text NOT NULL,
    from_node text NOT NULL,
    to_node text NOT NULL,
    diameter_mm double precision NOT NULL CHECK (diameter_mm > 0 AND diameter_mm <= 10000),
    material text,
    start_invert_m double precision NOT NULL,
    end_invert_m double precision NOT NULL,
    built_year integer CHECK (built_year BETWEEN 1800 AND 2200),
    geom geometry(LineStringZ, {{SRID}}) NOT NULL,
    length_m double precision GENERATED ALWAYS AS (ST_Length(geom)) STORED,
    district_code text NOT NULL REFERENCES admin_units (code),
    street_code text NOT NULL,
    community_code text NOT NULL,
    grid_code text NOT NULL REFERENCES admin_units (code),
    attributes jsonb NOT NULL DEFAULT '{}',
    source_file text,
    source_id text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (from_node, network) REFERENCES pipe_nodes (code, network),
    FOREIGN KEY (to_node, network) REFERENCES pipe_nodes (code, network),
    CONSTRAINT pipes_distinct_ends CHECK (from_node <> to_node),
    CONSTRAINT pipes_geom_valid CHECK (ST_NPoints(geom) >= 2 AND ST_Length(geom) > 0),
    CONSTRAINT pipes_units_nested CHECK (
        left(grid_code, 12) = community_code AND left(community_code, 9) = street_code
        AND left(street_code, 6) = district_code
    )
);
CREATE INDEX pipes_geom_idx ON pipes USING gist (geom);
CREATE INDEX pipes_from_idx ON pipes (from_node);
CREATE INDEX pipes_to_idx ON pipes (to_node);
CREATE INDEX pipes_grid_idx ON pipes (grid_code);
CREATE INDEX pipes_network_idx ON pipes (network);

-- ---------------------------------------------------------------------------------------------------------
-- IoT devices and their observations.
CREATE TABLE devices (
    code text PRIMARY KEY CHECK (code ~ '^[A-Z][A-Z0-9_-]{1,39}$'),
    kind text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{1,39}$'),
    name text,
    status text NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'offline', 'fault', 'retired')),
    installed_at date,
    geom geometry(Point, {{SRID}}) NOT NULL,
    pipe_node_code text REFERENCES pipe_nodes (code) ON DELETE SET NULL,
    building_code text REFERENCES buildings (building_code) ON DELETE SET NULL,
    parcel_code text REFERENCES parcels (code) ON DELETE SET NULL,
    district_code text NOT NULL REFERENCES admin_units (code),
    street_code text NOT NULL,
    community_code text NOT NULL,
    grid_code text NOT NULL REFERENCES admin_units (code),
    attributes jsonb NOT NULL DEFAULT '{}',
    source_file text,
    source_id text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT devices_units_nested CHECK (
        left(grid_code, 12) = community_code AND left(community_code, 9) = street_code
        AND left(street_code, 6) = district_code
    )
);
CREATE INDEX devices_geom_idx ON devices USING gist (geom);
CREATE INDEX devices_kind_idx ON devices (kind);
CREATE INDEX devices_grid_idx ON devices (grid_code);
CREATE INDEX devices_building_idx ON devices (building_code);
CREATE INDEX devices_node_idx ON devices (pipe_node_code);

CREATE TABLE observations (
    device_code text NOT NULL REFERENCES devices (code) ON DELETE CASCADE,
    property text NOT NULL CHECK (property ~ '^[a-z][a-z0-9_]{0,62}$'),
    observed_at timestamptz NOT NULL,
    value double precision NOT NULL CHECK (value = value AND value <> 'Infinity' AND value <> '-Infinity'),
    district_code text NOT NULL,
    PRIMARY KEY (device_code, property, observed_at)
);
CREATE INDEX observations_time_idx ON observations (observed_at);

-- ---------------------------------------------------------------------------------------------------------
-- Citizen complaints and incidents (民生诉求).
CREATE TABLE events (
    code text PRIMARY KEY CHECK (code ~ '^EV[0-9]{14}$'),
    category text NOT NULL CHECK (category ~ '^[a-z][a-z0-9_]{1,63}$'),
    subcategory text,
    status text NOT NULL CHECK (status IN ('reported', 'dispatched', 'in_progress', 'resolved', 'reopened',
                                           'closed', 'rejected')),
    reported_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    due_at timestamptz,
    closed_at timestamptz,
    department text,
    reopen_count integer NOT NULL DEFAULT 0 CHECK (reopen_count >= 0),
    description text NOT NULL,
    reporter_contact text,
    geom geometry(Point, {{SRID}}) NOT NULL,
    building_code text REFERENCES buildings (building_code) ON DELETE SET NULL,
    parcel_code text REFERENCES parcels (code) ON DELETE SET NULL,
    district_code text NOT NULL REFERENCES admin_units (code),
    street_code text NOT NULL,
    community_code text NOT NULL,
    grid_code text NOT NULL REFERENCES admin_units (code),
    attributes jsonb NOT NULL DEFAULT '{}',
    source_file text,
    source_id text,
    CONSTRAINT events_closed_at CHECK ((status = 'closed') = (closed_at IS NOT NULL)),
    CONSTRAINT events_times_ordered CHECK (
        updated_at >= reported_at AND (closed_at IS NULL OR closed_at >= reported_at)
        AND (due_at IS NULL OR due_at >= reported_at)
    ),
    CONSTRAINT events_units_nested CHECK (
        left(grid_code, 12) = community_code AND left(community_code, 9) = street_code
        AND left(street_code, 6) = district_code
    )
);
CREATE INDEX events_geom_idx ON events USING gist (geom);
CREATE INDEX events_status_idx ON events (status, category);
CREATE INDEX events_grid_idx ON events (grid_code);
CREATE INDEX events_reported_idx ON events (reported_at);

-- ---------------------------------------------------------------------------------------------------------
-- Catalogues of rasters, tilesets and ingest runs.
CREATE TABLE rasters (
    name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    kind text NOT NULL CHECK (kind IN ('ortho', 'dsm', 'dtm', 'other')),
    path text NOT NULL,
    crs text NOT NULL,
    bands integer NOT NULL CHECK (bands > 0),
    dtype text NOT NULL,
    nodata double precision,
    width integer NOT NULL CHECK (width > 0),
    height integer NOT NULL CHECK (height > 0),
    resolution double precision CHECK (resolution > 0),
    footprint geometry(Polygon, {{SRID}}) NOT NULL,
    attributes jsonb NOT NULL DEFAULT '{}',
    registered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rasters_footprint_idx ON rasters USING gist (footprint);

CREATE TABLE tilesets (
    layer text PRIMARY KEY CHECK (layer ~ '^[a-z][a-z0-9_-]{0,63}$'),
    path text NOT NULL,
    tileset_version integer NOT NULL DEFAULT 1 CHECK (tileset_version >= 1),
    feature_count bigint NOT NULL DEFAULT 0,
    tile_count integer NOT NULL DEFAULT 0,
    bounds geometry(Polygon, {{SRID}}),
    attributes jsonb NOT NULL DEFAULT '{}',
    built_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tilesets_bounds_idx ON tilesets USING gist (bounds);

CREATE TABLE ingest_runs (
    id bigserial PRIMARY KEY,
    layer text NOT NULL,
    source_file text NOT NULL,
    source_sha256 text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    read_count integer NOT NULL,
    inserted_count integer NOT NULL,
    updated_count integer NOT NULL,
    unchanged_count integer NOT NULL,
    repaired_count integer NOT NULL,
    rejected_count integer NOT NULL,
    report jsonb NOT NULL DEFAULT '{}'
);
