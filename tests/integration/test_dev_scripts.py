"""The README's two commands keep to the project's own virtual environment."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Stand-ins for the user's interpreter and pip: they record every call, then do the real thing.
_SHIM = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "{log}"
exec "{real}" "$@"
"""


def _shim_path(tmp_path: Path) -> tuple[dict[str, str], Path]:
    log = tmp_path / "calls.log"
    log.touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python3", "python", "pip", "pip3"):
        real = shutil.which(name)
        if real is None:
            continue
        shim = bin_dir / name
        shim.write_text(_SHIM.format(log=log, real=real))
        shim.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env, log


@pytest.mark.parametrize(
    "command",
    [["scripts/setup-dev"], ["scripts/run", "--help"]],
    ids=["test-setup", "run"],
)
def test_scripts_never_install_into_the_users_python(tmp_path: Path, command: list[str]) -> None:
    """setup-dev (used by scripts/test) and scripts/run install only into .venv, never globally."""
    env, log = _shim_path(tmp_path)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert not [call for call in calls if "install" in call], calls
    assert (ROOT / ".venv" / "bin" / "dicom-listener").exists()


def test_pynetdicom_apps_stay_inside_the_venv() -> None:
    """Pynetdicom's storescu lives in .venv/bin, so it never shadows DCMTK's on the user's PATH."""
    assert (ROOT / ".venv" / "bin" / "storescu").exists()
    assert Path("/usr/bin/storescu").exists()
