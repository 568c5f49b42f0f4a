"""The identity key's file mode, on a real daemon and a real home."""

from __future__ import annotations

import os
import stat

from harness.daemons import Cluster


def test_identity_key_readable_by_others_is_warned_about_and_fixed(cluster: Cluster) -> None:
    a = cluster.start("a")
    key = a.home / "identity.key"
    assert a.terminate() == 0
    os.chmod(key, 0o644)
    again = cluster.start("a")
    assert again.peer_id == a.peer_id
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    again.wait_logged(str(key), "WARNING", "mode 0644", "0600")
    # Once fixed, a restart has nothing to say about it.
    assert again.terminate() == 0
    third = cluster.start("a")
    assert not any(str(key) in line for line in third.stderr_lines)
