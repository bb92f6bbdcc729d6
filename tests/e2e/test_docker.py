"""docker/ is for users (no Docker engine here): its files parse, and every setting the
compose file gives the brokers is one the binary knows."""

import os
import subprocess
from pathlib import Path

import yaml

from helpers import REPO, icestream_bin

DOCKER = REPO / "docker"


def test_compose_is_valid_and_uses_real_settings():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    brokers = [s for s in services if s.startswith("broker-")]
    assert len(brokers) == 3
    for needed in ["fdb", "seaweedfs", "catalog-db", "trino"]:
        assert needed in services
    for name in brokers:
        env = services[name]["environment"]
        settings_env = {k: str(v) for k, v in env.items() if k.startswith("ICESTREAM_")}
        assert "ICESTREAM_METADATA" in settings_env
        # The binary accepts every value, and every variable names a setting.
        r = subprocess.run([icestream_bin(), "settings"], capture_output=True,
                           env={**{k: v for k, v in os.environ.items()
                                   if not k.startswith("ICESTREAM_")}, **settings_env},
                           timeout=30)
        assert r.returncode == 0, r.stderr.decode()
        assert "names no setting" not in r.stderr.decode(), r.stderr.decode()
        printed = r.stdout.decode()
        for k, v in settings_env.items():
            key = k[len("ICESTREAM_"):].lower()
            assert f"{key} =" in printed, f"{k} is not a setting"
        # Clients come in over SASL_SSL with the certificate the certs service makes.
        assert settings_env["ICESTREAM_LISTENERS"].startswith("SASL_SSL://")
        assert "/certs:" in " ".join(services[name]["volumes"])
    assert services["users"]["command"][:2] == ["users", "add"]
    assert "openssl x509" in services["certs"]["command"][0]
    mounted = services["trino"]["volumes"][0].split(":")[0]
    assert (DOCKER / mounted).is_file()


def test_dockerfile_builds_from_the_repository():
    text = (DOCKER / "Dockerfile").read_text()
    assert text.count("FROM ") == 2
    assert "--features foundationdb" in text
    assert 'ENTRYPOINT ["icestream"]' in text
    assert (REPO / "Cargo.lock").is_file(), "the image builds with --locked"
