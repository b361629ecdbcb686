"""Demo district generator: writes a Houhai-like part of Nanshan as ordinary input files (``generate``)."""
