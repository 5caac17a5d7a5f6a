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
    """The storescu of pynetdicom stays in .venv/bin: it never shadows DCMTK's on the PATH."""
    assert (ROOT / ".venv" / "bin" / "storescu").exists()
    assert Path("/usr/bin/storescu").exists()


def test_setup_dev_stops_loudly_when_gdcm_cannot_be_installed(tmp_path: Path) -> None:
    """With no working gdcmscu and an apt-get that installs nothing, setup-dev fails, saying so."""
    env, _log = _shim_path(tmp_path)
    bin_dir = tmp_path / "bin"
    apt_log = tmp_path / "apt.log"
    for name, script in {
        "gdcmscu": "exit 127",  # GDCM is missing
        "apt-get": f'echo "$*" >> "{apt_log}"',  # installs nothing
    }.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{script}\n")
        (bin_dir / name).chmod(0o755)

    done = subprocess.run(
        ["scripts/setup-dev"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )

    assert done.returncode != 0
    assert "GDCM (gdcmscu)" in done.stderr
    if os.geteuid() == 0:  # only root tries to install it
        assert "install -y -qq libgdcm-tools" in apt_log.read_text()
