-- Indexes for the CIM answers (GET /parcels/{code}/contents, /buildings/{code}): what a parcel or a building
-- holds is found through the parcel_code / building_code links the load step sets, not by scanning a layer.
-- Open events are the ones not finished (closed or rejected): the partial index holds just those, so a
-- parcel's open complaints are read from a few index entries whatever the city's history of closed cases.
CREATE INDEX devices_parcel_idx ON devices (parcel_code, kind);
CREATE INDEX events_parcel_open_idx ON events (parcel_code, category) WHERE status NOT IN ('closed', 'rejected');
CREATE INDEX events_building_idx ON events (building_code);
