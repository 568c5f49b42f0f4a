"""Hypothesis profiles of the fuzz suites, chosen with HYPOTHESIS_PROFILE.

- `ci` (the default, part of `make test`): a bounded, derandomized example count, so
  the run is the same every time and tests/fuzz stays under about a minute on a
  2-core machine. No database: the regression inputs live in the code as @example.
- `fuzz` (`make fuzz`): 30 times the examples, fresh randomness every run, and the
  example database in .hypothesis/ so a failure found once is replayed first.

Neither has a deadline: the machine is shared, and a test never asserts on time.
The profiles are applied per test (tests/fuzz/helpers.py `fuzz_settings`) rather
than loaded globally, so the unit tests' own hypothesis settings stay as they are.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 150
FUZZ_FACTOR = 30

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "ci",
    max_examples=CI_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=_QUIET,
)
settings.register_profile(
    "fuzz",
    max_examples=CI_EXAMPLES * FUZZ_FACTOR,
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=_QUIET,
)
