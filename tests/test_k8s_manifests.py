"""infra/k8s renders (tests/kustomize.py stands in for ``kubectl apply -k``) into objects that validate
against the Kubernetes schemas (kubernetes-validate ships them: no cluster, no network), and what
they run is what personae needs: probes on its health routes, real settings only, secrets referenced
from the Secret, the migration, every Discord shard run by exactly one StatefulSet pod.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.kustomize import containers, env_file, pod_specs, render

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "infra" / "k8s"
VERSIONS = ["1.30", kubernetes_validate.latest_version()]
VARIANTS = {  # the base with each component alone; "example" is overlays/example (vLLM and autoscaling)
    "base": [],
    "vllm": ["components/vllm"],
    "tgi": ["components/tgi"],
    "autoscaling": ["components/autoscaling"],
}
# Names the pods set that are not settings: the shard entrypoint's inputs (discord.yaml).
ENTRYPOINT_INPUTS = {"POD_NAME", "SHARD_REPLICAS"}
def variant(name: str, tmp_path: Path) -> list[dict]:
    if name == "example":
        return render(K8S / "overlays" / "example")
    components = VARIANTS[name]
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(K8S / "base")], "components": [str(K8S / c) for c in components],
    }))
    return render(tmp_path)


def by(docs: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def personae_containers(docs: list[dict]) -> list[dict]:
    return [c for c in containers(docs) if c["image"].split(":")[0].rsplit("/", 1)[-1] == "personae"]


def settings_map(docs: list[dict]) -> dict[str, str]:
    return by(docs, "ConfigMap", "personae-settings")["data"]


def env_example_names() -> set[str]:
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))


def secret_keys() -> set[str]:
    return set(env_file(K8S / "base" / "secrets.env.example"))


# ---- the Kubernetes schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", [*VARIANTS, "example"])
def test_every_object_validates_against_the_kubernetes_schema(name: str, version: str, tmp_path: Path) -> None:
    docs = variant(name, tmp_path)
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Deployment", "Service", "Job", "Secret", "ConfigMap", "PodDisruptionBudget"} <= kinds
    failures = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {'/'.join(map(str, exc.path))}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_the_schema_check_would_catch_a_mistake(tmp_path: Path) -> None:
    docs = variant("base", tmp_path)
    statefulset = by(docs, "StatefulSet", "personae-discord")
    statefulset["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = ["metrics"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, VERSIONS[0], strict=True)
    job = by(docs, "Job", "personae-migrate")
    job["spec"]["retries"] = 3  # not a Job field: strict schemas refuse it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[0], strict=True)


def test_the_example_overlay_sets_the_image_and_namespace() -> None:
    docs = render(K8S / "overlays" / "example")
    assert {c["image"] for c in personae_containers(docs)} == {"registry.example.com/personae:1.0.0"}
    assert {d["metadata"].get("namespace") for d in docs} == {"personae"}
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"} == {"personae-telegram", "personae-model"}


# ---- what the pods run --------------------------------------------------------------------------


def test_probes_ask_the_health_routes_on_the_metrics_port(tmp_path: Path) -> None:
    docs = variant("base", tmp_path)
    settings = settings_map(docs)
    assert settings["PERSONAE_METRICS_HOST"] == "0.0.0.0"  # the kubelet asks from outside the pod
    bots = [c for c in personae_containers(docs) if c["command"][-2:] != ["db", "upgrade"]]
    assert len(bots) == 2
    for container in bots:
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == int(settings["PERSONAE_METRICS_PORT"])
        for probe, path in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
            assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, (container["name"], probe)
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        assert container["resources"]["limits"]["memory"]


def test_every_variable_the_pods_set_is_a_real_setting(tmp_path: Path) -> None:
    docs = variant("autoscaling", tmp_path)
    known = env_example_names()
    names: set[str] = set(settings_map(docs)) | secret_keys()
    for container in personae_containers(docs):
        names |= {e["name"] for e in container.get("env", [])}
        names |= set(re.findall(r"export (PERSONAE_[A-Z0-9_]+)=", " ".join(container["command"])))
    unknown = {n for n in names if n not in known and n not in ENTRYPOINT_INPUTS}
    assert not unknown, f"not settings in .env.example: {sorted(unknown)}"
    assert {"PERSONAE_DATABASE_URL", "PERSONAE_REDIS_URL", "PERSONAE_DISCORD_TOKEN", "PERSONAE_TELEGRAM_TOKEN"} <= names


def test_secrets_are_referenced_from_the_secret_never_written_in(tmp_path: Path) -> None:
    docs = variant("vllm", tmp_path)
    secret = by(docs, "Secret", "personae")
    keys = secret_keys()
    assert set(secret["stringData"]) == keys
    assert not keys & set(settings_map(docs)), "a secret in the ConfigMap"
    for workload, spec in pod_specs(docs):
        for container in spec["containers"]:
            for env in container.get("env", []):
                if "value" in env:
                    assert env["name"] not in keys, f"{workload['metadata']['name']} writes {env['name']} in"
                    assert not re.search(r"://[^/]*@", env["value"]), f"{env['name']} carries a password"
                    continue
                ref = env["valueFrom"].get("secretKeyRef")
                if ref is not None:
                    assert ref["name"] == "personae" and ref["key"] in keys, ref
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, "each pod takes only the keys it needs"
    for value in settings_map(docs).values():
        assert not re.search(r"://[^/]*@", value)


def secret_env(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def test_each_adapter_runs_in_its_own_pods(tmp_path: Path) -> None:
    docs = variant("base", tmp_path)
    (discord,) = by(docs, "StatefulSet", "personae-discord")["spec"]["template"]["spec"]["containers"]
    (telegram,) = by(docs, "Deployment", "personae-telegram")["spec"]["template"]["spec"]["containers"]
    assert "PERSONAE_DISCORD_TOKEN" in secret_env(discord) and "PERSONAE_TELEGRAM_TOKEN" not in secret_env(discord)
    assert "PERSONAE_TELEGRAM_TOKEN" in secret_env(telegram) and "PERSONAE_DISCORD_TOKEN" not in secret_env(telegram)
    webhook = {e["name"]: e.get("value") for e in telegram["env"]}
    assert webhook["PERSONAE_TELEGRAM_WEBHOOK_URL"].startswith("https://")  # webhook mode, not one poller
    assert webhook["PERSONAE_TELEGRAM_WEBHOOK_LISTEN"] == "0.0.0.0"
    port = int(webhook["PERSONAE_TELEGRAM_WEBHOOK_PORT"])
    assert {"name": "webhook", "containerPort": port} in telegram["ports"]
    service = by(docs, "Service", "personae-telegram")
    assert {"name": "webhook", "port": port, "targetPort": "webhook"} in service["spec"]["ports"]


def test_services_and_budgets_select_the_pods_they_mean(tmp_path: Path) -> None:
    docs = variant("vllm", tmp_path)
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w, _ in pod_specs(docs)}
    for doc in docs:
        if doc["kind"] in {"Service", "PodDisruptionBudget"}:
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert doc["metadata"]["name"] in pods and selector.items() <= pods[doc["metadata"]["name"]].items(), doc["metadata"]["name"]
            others = [n for n, labels in pods.items() if n != doc["metadata"]["name"] and selector.items() <= labels.items()]
            assert not others, f"{doc['metadata']['name']} also selects {others}"
    assert by(docs, "StatefulSet", "personae-discord")["spec"]["serviceName"] == "personae-discord"
    assert settings_map(docs)["PERSONAE_LLM_URL"] == "http://personae-model:8000"
    model = by(docs, "Service", "personae-model")["spec"]["ports"]
    assert [p["port"] for p in model] == [8000]


def test_the_migration_job_runs_db_upgrade(tmp_path: Path) -> None:
    docs = variant("base", tmp_path)
    job = by(docs, "Job", "personae-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["personae", "db", "upgrade"]
    assert "PERSONAE_DATABASE_URL" in secret_env(container)
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}


def test_the_model_server_gets_a_gpu(tmp_path: Path) -> None:
    for name, image in [("vllm", "vllm/vllm-openai"), ("tgi", "ghcr.io/huggingface/text-generation-inference")]:
        docs = variant(name, tmp_path / name)
        model = by(docs, "Deployment", "personae-model")
        (container,) = model["spec"]["template"]["spec"]["containers"]
        assert container["image"].startswith(image + ":")
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["startupProbe"]["httpGet"]["path"] == "/health"
        assert "--port=8000" in container["args"]
    assert not [d for d in variant("base", tmp_path / "base") if d["metadata"]["name"] == "personae-model"]


def test_the_webhook_replicas_scale_on_queue_depth(tmp_path: Path) -> None:
    docs = variant("autoscaling", tmp_path)
    hpa = by(docs, "HorizontalPodAutoscaler", "personae-telegram")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "personae-telegram"}
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert re.search(rf'Gauge\(\s*"{name}"', (ROOT / "bots" / "metrics.py").read_text()), f"{name} is not a gauge personae exports"
    assert "replicas" not in by(docs, "Deployment", "personae-telegram")["spec"], "the HPA owns the replica count"
    assert by(variant("base", tmp_path / "base"), "Deployment", "personae-telegram")["spec"]["replicas"] >= 2


# ---- Discord shards: each pod's range from its ordinal ------------------------------------------


def shard_script(docs: list[dict]) -> list[str]:
    (container,) = by(docs, "StatefulSet", "personae-discord")["spec"]["template"]["spec"]["containers"]
    return container["command"]


def parse_range(text: str) -> list[int]:
    try:  # the replicas branch's parser, when it is there: the range must be one it accepts
        from bots.discord.shards import parse_shards
    except ImportError:
        first, last = (int(n) for n in text.split("-"))
        return list(range(first, last + 1))
    return sorted(parse_shards(text))


@pytest.fixture
def fake_personae(tmp_path: Path) -> Path:
    """A ``personae`` on PATH that prints the shards it was started with instead of running."""
    binary = tmp_path / "bin" / "personae"
    binary.parent.mkdir()
    binary.write_text('#!/bin/sh\necho "SHARDS=$PERSONAE_DISCORD_SHARDS ARGS=$*"\n')
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    return binary.parent


def start_pod(command: list[str], bin_dir: Path, ordinal: int, replicas: int, count: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "POD_NAME": f"personae-discord-{ordinal}",
           "SHARD_REPLICAS": str(replicas), "PERSONAE_DISCORD_SHARD_COUNT": count}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


def test_the_statefulset_runs_every_shard_exactly_once(tmp_path: Path, fake_personae: Path) -> None:
    command = shard_script(variant("base", tmp_path))
    for count in (1, 2, 3, 5, 8, 16, 17):
        for replicas in range(1, min(count, 6) + 1):
            run: list[int] = []
            for ordinal in range(replicas):
                done = start_pod(command, fake_personae, ordinal, replicas, str(count))
                assert done.returncode == 0, done.stderr
                shards, args = re.search(r"SHARDS=(\S+) ARGS=(.*)", done.stdout).groups()
                assert args == "run"
                taken = parse_range(shards)
                assert taken, f"pod {ordinal} of {replicas} runs no shard of {count}"
                run += taken
            assert sorted(run) == list(range(count)), (count, replicas, run)


def test_a_pod_without_shards_stops_and_says_what_to_change(tmp_path: Path, fake_personae: Path) -> None:
    command = shard_script(variant("base", tmp_path))
    past = start_pod(command, fake_personae, 3, 3, "8")  # scaled to 4 pods, SHARD_REPLICAS left at 3
    assert past.returncode == 78 and "SHARD_REPLICAS" in past.stderr and "SHARDS=" not in past.stdout
    auto = start_pod(command, fake_personae, 0, 2, "auto")
    assert auto.returncode == 78 and "PERSONAE_DISCORD_SHARD_COUNT" in auto.stderr
    too_many = start_pod(command, fake_personae, 0, 4, "2")
    assert too_many.returncode == 78


def test_the_statefulset_replicas_match_the_shard_split(tmp_path: Path) -> None:
    statefulset = by(variant("example", tmp_path), "StatefulSet", "personae-discord")
    env = {e["name"]: e.get("value") for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert int(env["SHARD_REPLICAS"]) == statefulset["spec"]["replicas"]
    assert int(env["PERSONAE_DISCORD_SHARD_COUNT"]) >= statefulset["spec"]["replicas"]
    assert env["POD_NAME"] is None  # from the pod's own name (fieldRef), not written in
