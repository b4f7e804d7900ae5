"""The C core (mnsched/_core.c) is optional: without a compiler the package installs
with the pure-Python driver, which runs the same tests (docs/design.md, "The C core").
CFLAGS/LDFLAGS reach the compiler as usual (tools/sanitize.sh builds it with ASan/UBSan)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("mnsched._core", ["mnsched/_core.c"], optional=True)])
