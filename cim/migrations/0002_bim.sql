-- BIM models (IFC files) and their storeys. A model is identified by the GlobalId of its IfcBuilding (of its
-- IfcProject when the file has no single IfcBuilding), so a re-exported or renamed file replaces its earlier
-- version. Elements (bim_elements, 0001) point at their model; deleting a model deletes its storeys and
-- elements, deleting a building deletes its models.

CREATE TABLE bim_models (
    model_guid text PRIMARY KEY CHECK (model_guid ~ '^[0-9A-Za-z_$]{22}$'),
    building_code text NOT NULL REFERENCES buildings (building_code) ON DELETE CASCADE,
    source_file text NOT NULL,
    source_sha256 text NOT NULL CHECK (source_sha256 ~ '^[0-9a-f]{64}$'),
    ifc_schema text NOT NULL CHECK (ifc_schema IN ('IFC2X3', 'IFC4', 'IFC4X3')),
    georeference jsonb NOT NULL CHECK (georeference ? 'method'),
    element_count integer NOT NULL CHECK (element_count >= 0),
    meshless_count integer NOT NULL DEFAULT 0 CHECK (meshless_count >= 0 AND meshless_count <= element_count),
    storey_count integer NOT NULL DEFAULT 0 CHECK (storey_count >= 0),
    district_code text GENERATED ALWAYS AS (left(building_code, 6)) STORED,
    street_code text GENERATED ALWAYS AS (left(building_code, 9)) STORED,
    community_code text GENERATED ALWAYS AS (left(building_code, 12)) STORED,
    grid_code text GENERATED ALWAYS AS (left(building_code, 14)) STORED,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bim_models_building_idx ON bim_models (building_code);
CREATE INDEX bim_models_grid_idx ON bim_models (grid_code);

-- Storeys with orthometric elevations (metres, same datum as building heights). ordinal is the floor
-- number as in houses.storey: 1 is the lowest storey at or above the model's ±0.00 level, upward 2, 3 …;
-- storeys below are -1, -2 ….
CREATE TABLE bim_storeys (
    model_guid text NOT NULL REFERENCES bim_models (model_guid) ON DELETE CASCADE,
    ifc_guid text NOT NULL CHECK (ifc_guid ~ '^[0-9A-Za-z_$]{22}$'),
    building_code text NOT NULL REFERENCES buildings (building_code) ON DELETE CASCADE,
    name text,
    elevation_m double precision NOT NULL CHECK (elevation_m BETWEEN -1000 AND 10000),
    ordinal integer NOT NULL CHECK (ordinal <> 0),
    district_code text GENERATED ALWAYS AS (left(building_code, 6)) STORED,
    street_code text GENERATED ALWAYS AS (left(building_code, 9)) STORED,
    community_code text GENERATED ALWAYS AS (left(building_code, 12)) STORED,
    grid_code text GENERATED ALWAYS AS (left(building_code, 14)) STORED,
    PRIMARY KEY (model_guid, ifc_guid)
);
CREATE INDEX bim_storeys_building_idx ON bim_storeys (building_code, ordinal);

ALTER TABLE bim_elements ADD COLUMN model_guid text REFERENCES bim_models (model_guid) ON DELETE CASCADE;
CREATE INDEX bim_elements_model_idx ON bim_elements (model_guid);
