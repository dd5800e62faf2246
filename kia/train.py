"""Deprecated: the inject stage moved to `kia.inject` (0.1.0); this path goes in 0.2.

`from kia.train import InjectConfig, inject` keeps working for one release, with a warning.
"""

import warnings

from kia.inject import PRESETS, InjectConfig, InjectResult, inject

warnings.warn("kia.train is now kia.inject; import from there", DeprecationWarning, stacklevel=2)

__all__ = ["PRESETS", "InjectConfig", "InjectResult", "inject"]
