"""The ``cim`` command line: the composition root that wires ingest, cim, tilesets and api together."""
