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

extensions = [
    Extension(
        "harpia._frames",
        ["harpia/_frames.pyx"],
        include_dirs=["harpia"],
        extra_compile_args=extra_compile_args,
        libraries=["z"],
    ),
    Extension(
        "harpia._deflate",
        ["harpia/_deflate.pyx"],
        include_dirs=["harpia"],
        extra_compile_args=extra_compile_args,
        libraries=["z"],
    ),
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
