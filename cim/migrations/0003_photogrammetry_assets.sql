-- Catalogue of 3D assets from oblique photogrammetry and laser scanning: point clouds (LAS/LAZ, PLY, XYZ)
-- and meshes (OBJ, glTF/GLB), kept as files under $CIM_HOME/assets/<name>/ for the 3D Tiles step.
-- Bounds are in the asset's own CRS (mesh vertices already moved by the origin); the footprint is the
-- horizontal bounding box transformed to the storage CRS (EPSG:{{SRID}}) with densified edges.
CREATE TABLE assets (
    name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    kind text NOT NULL CHECK (kind IN ('pointcloud', 'mesh')),
    format text NOT NULL CHECK (format IN ('las', 'laz', 'ply', 'xyz', 'obj', 'gltf', 'glb')),
    path text NOT NULL,
    files text[] NOT NULL DEFAULT '{}',
    crs text NOT NULL,
    srid integer CHECK (srid > 0),
    point_count bigint CHECK (point_count > 0),
    vertex_count bigint CHECK (vertex_count > 0),
    triangle_count bigint CHECK (triangle_count > 0),
    bounds_min double precision[] NOT NULL CHECK (cardinality(bounds_min) = 3),
    bounds_max double precision[] NOT NULL CHECK (cardinality(bounds_max) = 3),
    origin double precision[] CHECK (origin IS NULL OR cardinality(origin) = 3),
    up_axis text CHECK (up_axis IN ('y', 'z')),
    footprint geometry(Polygon, {{SRID}}) NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes > 0),
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    attributes jsonb NOT NULL DEFAULT '{}',
    registered_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT assets_counts_by_kind CHECK (
        (kind = 'pointcloud' AND point_count IS NOT NULL AND triangle_count IS NULL)
        OR (kind = 'mesh' AND vertex_count IS NOT NULL AND triangle_count IS NOT NULL AND origin IS NOT NULL)
    ),
    CONSTRAINT assets_bounds_ordered CHECK (
        bounds_min[1] <= bounds_max[1] AND bounds_min[2] <= bounds_max[2] AND bounds_min[3] <= bounds_max[3]
    ),
    CONSTRAINT assets_footprint_valid CHECK (ST_IsValid(footprint) AND NOT ST_IsEmpty(footprint))
);
CREATE INDEX assets_footprint_idx ON assets USING gist (footprint);
CREATE INDEX assets_kind_idx ON assets (kind);
