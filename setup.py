"""Builds harpia's C extension; everything else lives in pyproject.toml."""
import os
import platform

from Cython.Build import cythonize
from setuptools import Extension, setup

extra_compile_args = ["-O3"]
if platform.machine() in ("x86_64", "AMD64") and os.environ.get("HARPIA_NATIVE") == "1":
    # Opt-in: a wheel built for one CPU must not crash on another, so -march=native
    # is only for people building on the machine that runs the server.
    extra_compile_args.append("-march=native")

define_macros = []
if os.environ.get("HARPIA_SCALAR_MASK") == "1":
    # The portable masking loop only, no SIMD dispatch: what non-x86 builds run, forced here
    # so that path is tested on x86 too (CI builds the engine this way and runs its tests).
    define_macros.append(("HARPIA_MASK_SCALAR", "1"))

# The frame engine and its parts, one extension module each: they cimport each other's
# .pxd, so calls between them stay C calls.
ENGINE_UNITS = ["_wire", "_buffer", "_deflate", "_output", "_loop", "_sender", "_frames",
                "_frame_tools", "_publish", "_transport", "_acceptor", "_connector", "_counters"]
# Compiled protocol pieces above the engine: the usual upgrade request, read in C.
PROTOCOL_UNITS = ["_upgrade"]

extensions = [
    Extension(
        f"harpia.{name}",
        [f"harpia/{name}.pyx"],
        include_dirs=["harpia"],
        extra_compile_args=extra_compile_args,
        define_macros=define_macros,
        libraries=["z"] if name == "_deflate" else [],
    )
    for name in ENGINE_UNITS + PROTOCOL_UNITS
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
