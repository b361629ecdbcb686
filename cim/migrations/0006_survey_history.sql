-- Change surveys: versions are stamped with the survey's date rather than the load time.
-- A load sets the transaction-local setting cim.change_time; without it, changes happen now().

CREATE FUNCTION cim_change_time() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('cim.change_time', true), '')::timestamptz, now())
$$;

CREATE OR REPLACE FUNCTION buildings_keep_history() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := cim_change_time();
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO building_history
        SELECT OLD.building_code, OLD.version, 'demolished', OLD.name, OLD.use, OLD.height_m,
               OLD.height_source, OLD.storeys, OLD.ground_elevation_m, OLD.footprint, OLD.district_code,
               OLD.street_code, OLD.community_code, OLD.grid_code, OLD.parcel_code, OLD.attributes,
               OLD.source_file, OLD.source_id, OLD.valid_from, greatest(t, OLD.valid_from);
        RETURN OLD;
    END IF;
    -- Where a building came from (source file and id) is provenance, not content: a new survey file that
    -- repeats a building unchanged leaves it untouched.
    IF (NEW.name, NEW.use, NEW.height_m, NEW.height_source, NEW.storeys, NEW.ground_elevation_m,
        ST_AsEWKB(NEW.footprint), NEW.parcel_code, NEW.attributes)
       IS NOT DISTINCT FROM
       (OLD.name, OLD.use, OLD.height_m, OLD.height_source, OLD.storeys, OLD.ground_elevation_m,
        ST_AsEWKB(OLD.footprint), OLD.parcel_code, OLD.attributes) THEN
        RETURN NULL;  -- nothing changed: skip the update
    END IF;
    INSERT INTO building_history
    SELECT OLD.building_code, OLD.version, 'altered', OLD.name, OLD.use, OLD.height_m, OLD.height_source,
           OLD.storeys, OLD.ground_elevation_m, OLD.footprint, OLD.district_code, OLD.street_code,
           OLD.community_code, OLD.grid_code, OLD.parcel_code, OLD.attributes, OLD.source_file,
           OLD.source_id, OLD.valid_from, greatest(t, OLD.valid_from);
    NEW.version := OLD.version + 1;
    NEW.valid_from := CASE WHEN NEW.valid_from > OLD.valid_from THEN NEW.valid_from
                           ELSE greatest(t, OLD.valid_from) END;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE INDEX building_history_change_idx ON building_history (change, valid_to);
CREATE INDEX buildings_valid_from_idx ON buildings (valid_from);
