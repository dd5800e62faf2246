"""How many inputs the property-based tests try.

CI runs each property on a fixed number of inputs, derandomized (the same inputs every run, so a
failure reproduces and a green run stays green). A developer's long run raises every property to
KIA_FUZZ_EXAMPLES inputs drawn at random (a fresh seed each run; hypothesis keeps the failures it
finds in .hypothesis/ and replays them first next time):

    KIA_FUZZ_EXAMPLES=2000 python -m pytest tests/test_hardening.py tests/test_rows.py tests/test_adapters.py --hypothesis-show-statistics

`--hypothesis-show-statistics` prints, per property, how many inputs passed, failed or were invalid.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ = int(os.environ.get("KIA_FUZZ_EXAMPLES") or 0)
_COMMON = {
    "deadline": None,  # the first example pays for imports (pyarrow, datasets); timing is not the point
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
settings.register_profile("fuzz", derandomize=False, **_COMMON)
settings.load_profile("fuzz" if FUZZ else "ci")


def examples(n: int) -> settings:
    """`n` inputs in CI; KIA_FUZZ_EXAMPLES inputs in a long run (never fewer than `n`)."""
    return settings(max_examples=max(n, FUZZ))
