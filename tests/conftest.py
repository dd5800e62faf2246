"""Shared test settings: the hypothesis profiles (see tests/fuzzing.py)."""

import fuzzing  # noqa: F401  (registers and loads the "ci" or "fuzz" profile before any test module)
