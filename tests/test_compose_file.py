"""docker-compose.yml is a valid Compose file with each model-server profile, and what it runs is
what production needs (there is no Docker engine here: the file is read, resolved and checked).

The Compose specification's JSON schema comes from the check-jsonschema package (its vendored copy
of compose-spec/compose-spec's schema, Apache-2.0), so no network is needed.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import stat
import subprocess
import time
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from bots.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MODEL_SERVERS = {"tgi", "vllm", "sglang"}
ALWAYS = {"postgres", "redis", "migrate", "bots"}
OBSERVABILITY = {"prometheus", "grafana"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_schema() -> dict:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def resolve(model: dict, profiles: set[str]) -> dict:
    """The project Compose runs with ``profiles`` active: services without a profile, plus those whose
    profiles are active; a dependency on a disabled service must be ``required: false`` and is dropped."""
    model = copy.deepcopy(model)
    services = model["services"]
    enabled = {name for name, s in services.items() if not s.get("profiles") or profiles & set(s["profiles"])}
    for name in list(services):
        if name not in enabled:
            del services[name]
    for name, service in services.items():
        for dep, spec in list(service.get("depends_on", {}).items()):
            if dep not in enabled:
                assert spec.get("required") is False, f"{name} needs {dep}, which profile(s) {profiles or '{}'} do not run"
                del service["depends_on"][dep]
    return model


def flags(command: list[str]) -> dict[str, str]:
    return dict(a.lstrip("-").split("=", 1) for a in command if a.startswith("--") and "=" in a)


# ---- the Compose specification ------------------------------------------------------------------


@pytest.mark.parametrize("profiles", [set(), {"tgi"}, {"vllm"}, {"sglang"}, {"observability"}, {"tgi", "observability"}])
def test_the_file_validates_against_the_compose_specification(profiles: set[str]) -> None:
    schema = compose_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(resolve(compose(), profiles)), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_would_catch_a_mistake() -> None:
    broken = compose()
    broken["services"]["bots"]["restart_policy"] = "on-failure"  # not a Compose key
    broken["services"]["redis"]["healthcheck"]["interval"] = ["5s"]
    validator = jsonschema.Draft202012Validator(compose_schema())
    assert len(list(validator.iter_errors(broken))) >= 2


def test_the_ports_override_validates_and_publishes_on_loopback_only() -> None:
    override = yaml.safe_load((ROOT / "docker-compose.ports.yml").read_text())
    validator = jsonschema.Draft202012Validator(compose_schema())
    assert not list(validator.iter_errors(override))
    assert set(override["services"]) == {"postgres", "redis"} | MODEL_SERVERS | OBSERVABILITY
    for service in override["services"].values():
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])


# ---- profiles -----------------------------------------------------------------------------------


@pytest.mark.parametrize("server", sorted(MODEL_SERVERS))
def test_each_profile_runs_the_stack_with_exactly_its_model_server(server: str) -> None:
    assert set(resolve(compose(), {server})["services"]) == ALWAYS | {server}


def test_without_a_profile_no_model_server_runs_and_the_bots_still_start() -> None:
    resolved = resolve(compose(), set())
    assert set(resolved["services"]) == ALWAYS
    assert set(resolved["services"]["bots"]["depends_on"]) == {"postgres", "redis", "migrate"}


def test_env_example_chooses_tgi_by_default() -> None:
    assert re.search(r"^COMPOSE_PROFILES=tgi$", (ROOT / ".env.example").read_text(), re.M)


# ---- the model servers --------------------------------------------------------------------------


@pytest.mark.parametrize("server", sorted(MODEL_SERVERS))
def test_every_model_server_answers_as_model_8000_on_a_gpu_with_a_patient_health_check(server: str) -> None:
    service = compose()["services"][server]
    assert service["networks"]["default"]["aliases"] == ["model"]
    assert "--port=8000" in service["command"]
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    check = service["healthcheck"]
    assert "http://localhost:8000/health" in " ".join(check["test"])
    period = check["start_period"]
    assert period.endswith("m") and int(period[:-1]) >= 30, "the first start downloads ~25 GB of weights"
    assert "model-weights:/data" in service["volumes"], "one weights volume, shared by the three servers"
    assert service["environment"]["HF_TOKEN"] == "${HF_TOKEN:-}"


def test_tgi_serves_bd_rp_within_the_training_length() -> None:
    tgi = compose()["services"]["tgi"]
    assert tgi["image"].startswith("ghcr.io/huggingface/text-generation-inference:")
    args = flags(tgi["command"])
    assert args["model-id"] == "yuyouyu/Mistral-Nemo-BD-RP"
    assert int(args["max-input-tokens"]) == 4096
    assert int(args["max-total-tokens"]) == 4608
    assert int(args["max-concurrent-requests"]) > Settings.model_fields["llm_concurrency"].default
    assert args["max-stop-sequences"] == "4"
    assert args["usage-stats"] == "off"


def test_vllm_serves_bd_rp_under_a_served_name_with_guided_decoding() -> None:
    vllm = compose()["services"]["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    assert vllm["command"][0] == "yuyouyu/Mistral-Nemo-BD-RP"
    args = flags(vllm["command"])
    assert args["served-model-name"] == "bd-rp"
    assert int(args["max-model-len"]) == 4608
    assert int(args["max-num-seqs"]) > Settings.model_fields["llm_concurrency"].default
    assert args["structured-outputs-config.backend"] == "xgrammar"
    assert 0 < float(args["gpu-memory-utilization"]) < 1


def test_sglang_serves_bd_rp_under_a_served_name_with_guided_decoding() -> None:
    sglang = compose()["services"]["sglang"]
    assert sglang["image"].startswith("lmsysorg/sglang:")
    args = flags(sglang["command"])
    assert args["model-path"] == "yuyouyu/Mistral-Nemo-BD-RP"
    assert args["served-model-name"] == "bd-rp"
    assert args["host"] == "0.0.0.0", "SGLang listens on 127.0.0.1 unless told"
    assert int(args["context-length"]) == 4608
    assert int(args["max-running-requests"]) > Settings.model_fields["llm_concurrency"].default
    assert args["grammar-backend"] == "xgrammar"


# ---- personae's own services --------------------------------------------------------------------


def test_migrate_and_bots_run_one_image_built_from_infra_dockerfile() -> None:
    services = compose()["services"]
    migrate, bots = services["migrate"], services["bots"]
    assert migrate["image"] == bots["image"] and migrate["image"].startswith("personae:")
    assert migrate["build"] == bots["build"] == {"context": ".", "dockerfile": "infra/Dockerfile"}
    assert migrate["command"] == ["personae", "db", "upgrade"]
    assert migrate["restart"] == "no"


def test_bots_wait_for_database_cache_migration_and_whichever_model_server_runs() -> None:
    bots = compose()["services"]["bots"]
    depends = bots["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    for name in ("postgres", "redis"):
        assert depends[name]["condition"] == "service_healthy"
    for name in MODEL_SERVERS:
        assert depends[name] == {"condition": "service_healthy", "required": False}
    env = bots["environment"]
    assert env["PERSONAE_DATABASE_URL"].startswith("postgresql+asyncpg://personae:${POSTGRES_PASSWORD:?")
    assert env["PERSONAE_REDIS_URL"] == "redis://redis:6379/0"
    assert env["PERSONAE_LLM_URL"] == "${PERSONAE_LLM_URL:-http://model:8000}"
    assert "PERSONAE_LLM_MODEL" not in env, "unset: the client asks the server for its model name"


def test_no_secret_has_a_default_and_no_database_or_cache_port_is_published() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    uses = re.findall(r"\$\{POSTGRES_PASSWORD([^}]*)\}", text)
    assert uses and all(u.startswith(":?") for u in uses), "POSTGRES_PASSWORD must be required, never defaulted"
    for name, service in compose()["services"].items():
        assert "ports" not in service, f"{name} publishes a host port (docker-compose.ports.yml is for that)"


def test_every_variable_the_compose_files_read_is_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    for path in ("docker-compose.yml", "docker-compose.ports.yml"):
        for name in set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (ROOT / path).read_text())):
            assert re.search(rf"^#? ?{name}=", example, re.M), f"{path} reads {name}, which .env.example does not show"


def test_the_bots_health_check_is_personae_health() -> None:
    bots = compose()["services"]["bots"]
    assert bots["healthcheck"]["test"] == ["CMD", "personae", "health"]
    assert bots["environment"]["PERSONAE_HEARTBEAT_FILE"].startswith("/")


def _run_bots_command(tmp_path: Path, exit_status: int) -> int:
    """Run the bots service's command with a stand-in ``personae`` that exits with ``exit_status``."""
    command = compose()["services"]["bots"]["command"]
    assert command[:2] == ["sh", "-c"]
    script = command[2].replace("$$", "$")  # Compose's escape for a literal $
    stub = tmp_path / "personae"
    stub.write_text(f"#!/bin/sh\nexit {exit_status}\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", script], env=env, timeout=30).returncode


def _as_a_container_starts() -> None:
    """A container's processes start with SIGINT and SIGTERM at their defaults and unblocked; a test
    runner's worker may not (and sh cannot trap a signal that was ignored when it started)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _signal_state(group: int) -> str:
    """Each process of ``group``: its command and its ignored, blocked and caught signal masks."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if os.getpgid(int(status.parent.name)) != group:
                continue
        except (OSError, ValueError):
            continue
        found.append(f"{fields.get('Name', '?').strip()} ign={fields.get('SigIgn', '?').strip()} "
                     f"blk={fields.get('SigBlk', '?').strip()} cgt={fields.get('SigCgt', '?').strip()}")
    return "; ".join(found) or "none left"


def test_docker_stop_lets_personae_finish_before_the_shell_exits(tmp_path: Path) -> None:
    """``docker stop`` sends SIGINT to the whole group (tini -g): sh must wait for personae's own exit."""
    command = compose()["services"]["bots"]["command"]
    bots = compose()["services"]["bots"]
    assert bots["init"] is True and bots["stop_signal"] == "SIGINT"
    assert bots["environment"]["TINI_KILL_PROCESS_GROUP"] == "1"
    stub = tmp_path / "personae"
    stub.write_text(
        "#!/bin/sh\n"
        f"trap 'echo stopped > {tmp_path}/stopped; exit 130' INT\n"
        f"echo > {tmp_path}/ready\n"
        # A trapped signal ends the wait builtin at once (POSIX); no process started every few ms.
        "while :; do sleep 60 & wait $!; done\n"
    )
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    shell = subprocess.Popen(
        ["sh", "-c", command[2].replace("$$", "$")], env=env, start_new_session=True, preexec_fn=_as_a_container_starts
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists():
            assert time.monotonic() < deadline and shell.poll() is None, "the stand-in never started"
            time.sleep(0.02)
        os.killpg(shell.pid, signal.SIGINT)
        try:
            status = shell.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"sh did not end after SIGINT; the group: {_signal_state(shell.pid)}")
        assert status == 1, "sh was killed by the signal instead of waiting for personae"
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
    assert (tmp_path / "stopped").exists()


def test_a_configuration_error_stops_the_bots_cleanly_and_a_crash_restarts_them(tmp_path: Path) -> None:
    assert compose()["services"]["bots"]["restart"] == "on-failure"
    assert _run_bots_command(tmp_path, 78) == 0, "EX_CONFIG: a clean stop, not restarted"
    assert _run_bots_command(tmp_path, 1) != 0, "a crash: restarted"
    assert _run_bots_command(tmp_path, 0) == 0


# ---- the image ----------------------------------------------------------------------------------


def test_the_image_installs_the_pinned_versions_and_no_bundled_model() -> None:
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert "COPY constraints.txt" in dockerfile
    installs = [line for line in dockerfile.splitlines() if re.search(r"pip (wheel|install)", line)]
    assert installs and all("-c " in line for line in installs)
    runs = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    assert not any("llama" in line.lower() or "[local" in line for line in runs), "the model runs in its own container"
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^=\s]+", line) for line in pins)


# ---- configuration documented -------------------------------------------------------------------


def _variables() -> list[str]:
    return [f"PERSONAE_{name.upper()}" for name in Settings.model_fields]


def test_env_example_shows_every_setting_and_the_compose_variables() -> None:
    example = (ROOT / ".env.example").read_text()
    missing = [v for v in [*_variables(), "POSTGRES_PASSWORD", "HF_TOKEN", "COMPOSE_PROFILES"] if not re.search(rf"^#? ?{v}=", example, re.M)]
    assert not missing, f".env.example lacks {missing}"


def test_the_readme_configuration_table_names_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") :]
    table = table[: table.index("\n## ")]
    missing = [v for v in _variables() if f"`{v}`" not in table]
    assert not missing, f"README's configuration table lacks {missing}"


def test_the_build_context_leaves_out_secrets_and_the_virtualenv() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".env", ".venv/", ".git/"} <= ignored
    copied = re.findall(r"^COPY (?!--from)(.+?) \S+$", (ROOT / "infra" / "Dockerfile").read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert source.rstrip("/") + "/" not in ignored and source not in ignored, f"the Dockerfile copies {source}, which .dockerignore leaves out"


# ---- the observability profile -----------------------------------------------------------------


def test_the_observability_profile_adds_prometheus_and_grafana_to_the_stack() -> None:
    assert set(resolve(compose(), {"tgi", "observability"})["services"]) == ALWAYS | {"tgi"} | OBSERVABILITY
    assert set(resolve(compose(), {"observability"})["services"]) == ALWAYS | OBSERVABILITY
    assert not OBSERVABILITY & set(resolve(compose(), {"tgi"})["services"])


def test_prometheus_scrapes_the_port_the_bots_serve_metrics_on() -> None:
    services = compose()["services"]
    env = services["bots"]["environment"]
    port = int(env["PERSONAE_METRICS_PORT"])
    assert env["PERSONAE_METRICS_HOST"] == "0.0.0.0"  # reachable on the compose network; no host port is published
    Settings(metrics_port=env["PERSONAE_METRICS_PORT"], metrics_host=env["PERSONAE_METRICS_HOST"])
    mounts = {m.split(":")[1]: ROOT / m.split(":")[0] for m in services["prometheus"]["volumes"] if m.startswith("./")}
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["bots"] and sd["port"] == port


def test_grafana_is_provisioned_with_the_dashboard_and_prometheus() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {m.split(":")[1]: ROOT / m.split(":")[0] for m in grafana["volumes"] if m.startswith("./")}
    provisioning, dashboards = mounts["/etc/grafana/provisioning"], mounts["/var/lib/grafana/dashboards"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "personae.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    password = grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD")
    assert (dashboards / "personae.json").is_file()


def test_every_dashboard_panel_asks_for_metrics_personae_serves() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from bots.metrics import PrometheusMetrics

    metrics = PrometheusMetrics()
    metrics.first_text("discord", 1.0)  # labelled histograms show once they have a series
    metrics.appraisal("model", 1.0)
    metrics.storage("database", 0.01)
    served = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        served |= {s.name for s in family.samples} | {family.name + suffix for suffix in ("_total", "_bucket", "_count", "_sum")}
    dashboard = json.loads((ROOT / "infra" / "grafana" / "dashboards" / "personae.json").read_text())
    asked = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        for target in panel["targets"]:
            asked |= set(re.findall(r"\b(personae_[a-z_]+)", target["expr"]))
    assert asked and asked <= served, asked - served
    wanted = {
        "personae_turns_total", "personae_first_text_seconds_bucket", "personae_model_first_token_seconds_bucket",
        "personae_model_tokens_per_second_bucket", "personae_turns_waiting", "personae_queue_wait_seconds_bucket",
        "personae_appraisal_seconds_bucket", "personae_appraisal_tokens_total", "personae_cache_lookups_total",
        "personae_storage_seconds_bucket", "personae_rate_limited_total", "personae_errors_total",
        "personae_model_slot_wait_seconds_bucket", "personae_model_slots_held", "personae_model_slots_waiting",
    }
    assert wanted <= asked, wanted - asked
