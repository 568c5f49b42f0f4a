"""The old path of harness/system_packages.py: this module *is*
`harness.system_packages` (an alias in sys.modules), so that tests written against
`tests.system_packages` still import and patch the one harness.
New tests import `harness.system_packages` directly."""

import sys

from harness import system_packages

sys.modules[__name__] = system_packages
