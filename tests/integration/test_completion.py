"""Shell completion for p2pctl, run in real bash and zsh."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gossipchat.clients.p2pctl import COMMANDS
from harness.daemons import run_p2pctl
from harness.system_packages import ensure_apt


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = run_p2pctl("completion", "bash")
    assert out.returncode == 0, out.stderr
    path = tmp_path_factory.mktemp("completion") / "p2pctl.bash"
    path.write_text(out.stdout)
    return path


def _complete_bash(script: Path, *words: str) -> list[str]:
    """What bash offers for the last word of `words` (the word being completed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    program = (f"source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
               "_p2pctl; printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_bash_completes_commands_options_and_files(bash_script: Path, tmp_path: Path) -> None:
    every = set(_complete_bash(bash_script, "p2pctl", ""))
    # Every command of the method table's front end, plus the ones of p2pctl alone.
    assert set(COMMANDS) | {"ui", "completion"} <= every
    assert _complete_bash(bash_script, "p2pctl", "se") == ["send"]
    assert _complete_bash(bash_script, "p2pctl", "--home", "/x", "hi") == ["history"]
    assert _complete_bash(bash_script, "p2pctl", "send", "lobby", "--i") == ["--image"]
    assert set(_complete_bash(bash_script, "p2pctl", "fetch", "--")) >= \
        {"--output", "--force", "--timeout"}
    assert _complete_bash(bash_script, "p2pctl", "ui", "--u") == ["--url"]
    assert _complete_bash(bash_script, "p2pctl", "completion", "") == ["bash", "zsh"]
    (tmp_path / "picture.png").write_bytes(b"x")
    assert _complete_bash(bash_script, "p2pctl", "send", "r", "--image",
                          str(tmp_path / "pic")) == [str(tmp_path / "picture.png")]


def test_zsh_loads_and_registers_the_completion(tmp_path: Path) -> None:
    reason = ensure_apt("zsh")
    if reason is not None:
        pytest.skip(reason)
    out = run_p2pctl("completion", "zsh")
    assert out.returncode == 0, out.stderr
    script = tmp_path / "_p2pctl"
    script.write_text(out.stdout)
    # compinit writes its dump file even with -D, replacing whatever the path was (with
    # -d /dev/null, as root, it replaced the device with a plain file): a file of ours.
    program = (f"autoload -U compinit && compinit -u -D -d {tmp_path}/zcompdump; "
               f"source {script}; print -r -- $_comps[p2pctl]; functions _p2pctl")
    done = subprocess.run([shutil.which("zsh") or "zsh", "-f", "-c", program],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "_p2pctl"
    body = "\n".join(lines[1:])
    for command in (*COMMANDS, "ui", "completion"):
        assert f"{command}:" in body, command
    assert "--image" in body
    assert "bash zsh" in body
