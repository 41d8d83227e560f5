"""docker-compose.yml has the services, ports and dependencies production needs (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_every_service() -> None:
    assert set(compose()["services"]) == {"postgres", "redis", "tgi", "migrate", "bots"}


def test_tgi_serves_bd_rp_on_a_gpu_within_the_training_length() -> None:
    tgi = compose()["services"]["tgi"]
    assert tgi["image"].startswith("ghcr.io/huggingface/text-generation-inference")
    args = dict(a.lstrip("-").split("=", 1) for a in tgi["command"])
    assert args["model-id"] == "yuyouyu/Mistral-Nemo-BD-RP"
    assert int(args["max-input-tokens"]) >= 4096
    assert int(args["max-total-tokens"]) > int(args["max-input-tokens"])
    assert args["usage-stats"] == "off"
    assert tgi["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "/health" in " ".join(tgi["healthcheck"]["test"])
    period = tgi["healthcheck"]["start_period"]
    assert period.endswith("m") and int(period[:-1]) >= 10, "loading the weights takes minutes"
    assert any(v.endswith(":/data") for v in tgi["volumes"])


def test_bots_wait_for_database_cache_model_and_migration() -> None:
    services = compose()["services"]
    bots = services["bots"]
    assert bots["build"]["dockerfile"] == "infra/Dockerfile"
    assert bots["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("postgres", "redis", "tgi"):
        assert bots["depends_on"][name]["condition"] == "service_healthy"
    env = bots["environment"]
    assert env["PERSONAE_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env["PERSONAE_REDIS_URL"].startswith("redis://redis:")
    assert env["PERSONAE_LLM_URL"] == "http://tgi:80"
    migrate = services["migrate"]
    assert migrate["command"] == ["personae", "db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert (ROOT / "infra" / "Dockerfile").exists()
