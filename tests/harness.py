"""The old path of harness/daemons.py: this module *is* `harness.daemons` (an alias in
sys.modules), so that tests written against `tests.harness` still import and patch the
one harness. New tests import `harness.daemons` directly."""

import sys

from harness import daemons

sys.modules[__name__] = daemons
