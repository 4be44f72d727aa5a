"""Runs the Python tests under pytest; exit 77 (meson: skipped) when a
dependency is missing."""

import importlib
import sys

for mod in ("torch", "numpy", "sklearn", "pytest"):
    try:
        importlib.import_module(mod)
    except ImportError:
        print("skipping the Python tests: %s is not installed for %s" % (mod, sys.executable))
        sys.exit(77)

import pytest  # noqa: E402

sys.exit(pytest.main(["-q", "-p", "no:cacheprovider"] + sys.argv[1:]))
