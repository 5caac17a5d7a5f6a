"""compose.cluster.yaml and its HAProxy config: three listeners on one database behind HAProxy."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.cluster import haproxy_binary

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CONFIG = ROOT / "config" / "haproxy.cluster.cfg"
LISTENERS = ("listener-a", "listener-b", "listener-c")


def test_haproxy_accepts_the_cluster_config() -> None:
    """``haproxy -c`` finds config/haproxy.cluster.cfg valid (listener names resolve later)."""
    done = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(HAPROXY_CONFIG)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr


def test_haproxy_balances_dicom_over_the_three_listeners_checking_their_readyz() -> None:
    """Port 11112 in TCP mode; each listener a server, checked with GET /readyz on port 9464."""
    config = HAPROXY_CONFIG.read_text()

    assert re.search(r"^\s+bind :11112$", config, re.MULTILINE)
    assert re.search(r"^\s+mode tcp$", config, re.MULTILINE)
    assert re.search(r"^\s+option httpchk GET /readyz$", config, re.MULTILINE)
    assert re.search(r"^\s+default-server check port 9464 ", config, re.MULTILINE)
    servers = re.findall(r"^\s+server (\S+) (\S+)$", config, re.MULTILINE)
    assert servers == [(name, f"{name}:11112") for name in LISTENERS]


def service(compose: str, name: str) -> str:
    """The text of service ``name`` in a compose file (up to the next top-level service)."""
    match = re.search(rf"^  {name}:\n((?:    .*\n|\n)*)", compose, re.MULTILINE)
    assert match, f"no service {name}"
    return match.group(1)


def test_cluster_compose_runs_three_named_listeners_on_one_database_and_a_quorum_queue() -> None:
    """PostgreSQL, RabbitMQ, three listeners (own node name and volume) and HAProxy on 11112."""
    compose = (ROOT / "compose.cluster.yaml").read_text()
    shared = compose.split("\nservices:\n", 1)[0]

    assert 'LISTENER_AMQP__QUEUE_TYPE: "quorum"' in shared
    assert re.search(r'LISTENER_STORAGE__DATABASE_URL: "postgresql://\S+@postgres:5432/', shared)
    assert re.search(r"^    image: postgres:\d+$", service(compose, "postgres"), re.MULTILINE)
    assert "image: rabbitmq:" in service(compose, "rabbitmq")
    for name in LISTENERS:
        text = service(compose, name)
        assert "<<: *listener\n" in text
        assert f'LISTENER_STORAGE__NODE_NAME: "{name}"' in text
        assert f"- {name}-data:/data" in text
    proxy = service(compose, "haproxy")
    assert '- "11112:11112"' in proxy
    assert "./config/haproxy.cluster.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in proxy
