"""check-config against the host: busy ports, unwritable data_dir, no broker, bad broker port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LISTENER_METRICS__HOST": "127.0.0.1", **env}
    return subprocess.run(
        [sys.executable, "-m", "listener", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _settings(tmp_path: Path) -> dict[str, str]:
    """A configuration the host can satisfy: free ports, a writable data_dir, the local broker."""
    return {
        "LISTENER_DICOM__HOST": "127.0.0.1",
        "LISTENER_DICOM__PORT": str(free_port()),
        "LISTENER_METRICS__PORT": str(free_port()),
        "LISTENER_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "LISTENER_STORAGE__MIN_FREE_MB": "1",
        "LISTENER_AMQP__URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
    }


def test_check_config_warns_about_nothing_on_a_host_that_fits(tmp_path: Path) -> None:
    """Free ports, a creatable data_dir and a listening broker give no warning and exit 0."""
    result = _cli("check-config", **_settings(tmp_path))

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_check_config_warns_when_the_dicom_port_is_taken(tmp_path: Path) -> None:
    """A port something else listens on is a warning naming dicom.port; exit stays 0."""
    settings = _settings(tmp_path)
    with socket.create_server(("127.0.0.1", int(settings["LISTENER_DICOM__PORT"]))):
        result = _cli("check-config", **settings)

    assert result.returncode == 0
    assert result.stderr.startswith("dicom-listener: warning: dicom.port: cannot bind 127.0.0.1:")
    assert "Address already in use" in result.stderr


def test_check_config_warns_when_the_broker_does_not_answer(tmp_path: Path) -> None:
    """A broker port nobody listens on is a warning naming amqp.url, without the password."""
    settings = {
        **_settings(tmp_path),
        "LISTENER_AMQP__URL": f"amqp://u:s3cret@127.0.0.1:{free_port()}/%2F",
    }

    result = _cli("check-config", **settings)

    assert result.returncode == 0
    assert "warning: amqp.url: broker 127.0.0.1:" in result.stderr
    assert "not reachable" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")
def test_check_config_warns_when_data_dir_is_not_writable(tmp_path: Path) -> None:
    """A data_dir on a read-only file system is a warning naming storage.data_dir."""
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], check=True)
    try:
        result = _cli(
            "check-config", **{**_settings(tmp_path), "LISTENER_STORAGE__DATA_DIR": str(mount)}
        )
    finally:
        subprocess.run(["umount", str(mount)], check=True)

    assert result.returncode == 0
    assert f"warning: storage.data_dir: {mount} is not writable" in result.stderr


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_bad_port_in_the_broker_url_is_one_line_and_exit_2(command: str, tmp_path: Path) -> None:
    """amqp.url with port 99999 fails check-config and run alike: one line, exit 2."""
    settings = {**_settings(tmp_path), "LISTENER_AMQP__URL": "amqp://u:pw@127.0.0.1:99999/%2F"}

    result = _cli(command, **settings)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("dicom-listener: configuration error: amqp.url:")
    assert "invalid port '99999'" in result.stderr


@pytest.mark.parametrize("output", ["stdout", "directory"])
def test_check_config_checks_no_broker_when_the_output_is_not_amqp(
    output: str, tmp_path: Path
) -> None:
    """With output.kind = stdout or directory an unreachable broker is no concern: no warning."""
    settings = {
        **_settings(tmp_path),
        "LISTENER_AMQP__URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
        "LISTENER_OUTPUT__KIND": output,
        "LISTENER_OUTPUT__DIRECTORY": str(tmp_path / "out"),
    }

    result = _cli("check-config", **settings)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_check_config_warns_when_the_output_directory_cannot_be_written(tmp_path: Path) -> None:
    """With output.kind = directory, a directory that cannot be created is a warning naming it."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    settings = {
        **_settings(tmp_path),
        "LISTENER_OUTPUT__KIND": "directory",
        "LISTENER_OUTPUT__DIRECTORY": str(blocker / "out"),
    }

    result = _cli("check-config", **settings)

    assert result.returncode == 0
    assert result.stderr.startswith("dicom-listener: warning: output.directory:")
