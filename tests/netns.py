"""The old path of harness/netns.py: this module *is* `harness.netns` (an alias in
sys.modules), so that tests written against `tests.netns` still import and patch the
one harness. New tests import `harness.netns` directly."""

import sys

from harness import netns

sys.modules[__name__] = netns
