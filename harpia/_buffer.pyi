"""The growable byte buffer the frame engine, its output and permessage-deflate share
(compiled with Cython; a C struct with no Python API)."""
