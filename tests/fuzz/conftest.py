"""Hypothesis profiles for the property-based tests of this folder.

``HYPOTHESIS_PROFILE`` picks one:

- ``ci`` (the default): derandomized, so a run is reproducible and CI is not
  flaky; a fixed number of examples that keeps the whole folder near a minute
  on two cores; no example database (nothing written into the checkout).
- ``dev``: random, many more examples and the example database, for hunting
  bugs by hand (``HYPOTHESIS_PROFILE=dev pytest tests/fuzz``).

The integration sample against the real engine sets its own, much smaller,
number of examples.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=150,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=2000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
