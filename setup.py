"""The optional C fast path (src/tcpmax/_fast.c): everything else is in pyproject.toml.

`optional=True`: without a C compiler or Python's headers the build warns and goes on, and
tcpmax runs its pure-Python paths (engine/native.py), the same behaviour, slower at scale.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("tcpmax._fast", ["src/tcpmax/_fast.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra",
                                                 "-Wno-unused-parameter"])])
