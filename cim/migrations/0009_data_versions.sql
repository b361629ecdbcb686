-- Data versions: one change counter per served table, for caches of derived products (vector and raster
-- tiles, TileJSON extents, the tileset and raster catalogues) to know when what they hold is out of date.
--
-- An AFTER ... FOR EACH STATEMENT trigger bumps the table's counter in the same transaction as the change,
-- so the new counter becomes visible exactly when the changed rows do (a reader that reads the counter and the
-- rows in one statement sees a consistent pair). Every writing statement bumps, also one that changed no
-- row: over-invalidation is harmless, a missed change would not be. Foreign-key actions (ON DELETE SET NULL,
-- CASCADE) run as statements on the referencing table and bump it too; COPY and TRUNCATE fire the trigger.
-- Cost: one row update per writing statement; writers of the same table wait on that row until the first
-- commits (batch loads of one table already run one at a time).
CREATE TABLE data_versions (
    table_name text PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION cim_bump_data_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO data_versions AS d (table_name, version) VALUES (TG_TABLE_NAME, 1)
    ON CONFLICT (table_name) DO UPDATE SET version = d.version + 1, changed_at = now();
    RETURN NULL;
END;
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['admin_units', 'parcels', 'buildings', 'houses', 'bim_elements', 'pipe_nodes', 'pipes',
                             'devices', 'events', 'roads', 'road_vertices', 'pois', 'rasters', 'tilesets', 'assets']
    LOOP
        INSERT INTO data_versions (table_name) VALUES (t);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION cim_bump_data_version()', t || '_data_version', t);
        EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION cim_bump_data_version()', t || '_data_version_truncate', t);
    END LOOP;
END;
$$;
