-- The event workflow (cim/event_workflow.py): per-category handling deadlines and the stored history of every
-- status transition (who, when, note). The statuses of events are those of 0001's CHECK, unchanged.

-- Deadline of each category, in hours after reporting: events.due_at = reported_at + due_hours. Seeded with
-- the deadlines the demo data uses; an operator adds or changes rows (new events take the current value).
CREATE TABLE event_categories (
    category text PRIMARY KEY CHECK (category ~ '^[a-z][a-z0-9_]{1,63}$'),
    due_hours integer NOT NULL CHECK (due_hours > 0)
);
INSERT INTO event_categories (category, due_hours) VALUES
    ('property_management', 120), ('noise', 48), ('environment', 120), ('traffic', 24), ('road_facility', 72),
    ('public_order', 24), ('illegal_construction', 360), ('fire_safety', 24), ('waterlogging', 6);

CREATE TABLE event_transitions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_code text NOT NULL REFERENCES events (code) ON DELETE CASCADE,
    from_status text NOT NULL,
    to_status text NOT NULL,
    actor text NOT NULL CHECK (actor <> ''),
    note text,
    department text,
    at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_transitions_changes CHECK (from_status <> to_status)
);
CREATE INDEX event_transitions_event_idx ON event_transitions (event_code, id);

-- Same change counter as every served table (0009), so caches of derived answers see new history rows.
INSERT INTO data_versions (table_name) VALUES ('event_transitions'), ('event_categories');
CREATE TRIGGER event_transitions_data_version AFTER INSERT OR UPDATE OR DELETE ON event_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION cim_bump_data_version();
CREATE TRIGGER event_transitions_data_version_truncate AFTER TRUNCATE ON event_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION cim_bump_data_version();
CREATE TRIGGER event_categories_data_version AFTER INSERT OR UPDATE OR DELETE ON event_categories
    FOR EACH STATEMENT EXECUTE FUNCTION cim_bump_data_version();
CREATE TRIGGER event_categories_data_version_truncate AFTER TRUNCATE ON event_categories
    FOR EACH STATEMENT EXECUTE FUNCTION cim_bump_data_version();
