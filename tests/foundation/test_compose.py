"""Structure of docker-compose.yml, the Dockerfile and .dockerignore.

Parsed, not run: these need neither Docker nor a database. Compose's own `$$` escape
is still in the values read here, since YAML knows nothing of interpolation.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

LONG_RUNNING = ("postgres", "redis", "web", "worker", "beat")
APP_SERVICES = ("migrate", "web", "worker", "beat")
APP_LONG_RUNNING = ("web", "worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict:
    with COMPOSE_FILE.open() as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _command(service: dict) -> str:
    """The command as one string, whether written as a list or as a string."""
    command = service["command"]
    if isinstance(command, list):
        return " ".join(str(part) for part in command)
    return str(command)


def _environment(service: dict) -> dict[str, str]:
    env = service["environment"]
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _healthcheck_test(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, list) else ["CMD-SHELL", test]


def _python_c_snippet(service: dict) -> str:
    test = _healthcheck_test(service)
    assert test[:3] == ["CMD", "python", "-c"], test
    assert len(test) == 4, test
    return test[3]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    result = []
    for line in lines:
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


# --- docker-compose.yml ---------------------------------------------------------------


def test_compose_uses_the_compose_spec_without_version_key(compose):
    assert "version" not in compose


def test_compose_defines_exactly_the_stack_services(services):
    always = {name for name, svc in services.items() if "profiles" not in svc}
    assert always == {"postgres", "redis", "migrate", "web", "worker", "beat"}
    # Prometheus and Grafana only when asked for (`--profile monitoring`).
    assert {name: svc["profiles"] for name, svc in services.items() if "profiles" in svc} == {
        "prometheus": ["monitoring"],
        "grafana": ["monitoring"],
    }


def test_infrastructure_images(services):
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    assert "build" not in services["postgres"]
    assert "build" not in services["redis"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_build_from_the_repository_root(services, name):
    assert services[name]["build"] == "."


def test_web_runs_uvicorn_on_the_asgi_application(services):
    command = _command(services["web"])
    assert "uvicorn config.asgi:application" in command
    assert "--host 0.0.0.0" in command
    assert "--port 8000" in command
    # The app alone decides the client's address (TRUSTED_PROXY_COUNT, default 0).
    assert "--no-proxy-headers" in command
    assert _environment(services["web"])["TRUSTED_PROXY_COUNT"] == "${TRUSTED_PROXY_COUNT:-0}"
    assert "FORWARDED_ALLOW_IPS" not in _environment(services["web"])
    assert "--ws-per-message-deflate false" in command
    # A websocket message is capped by the server before it is buffered.
    assert "--ws-max-size 16384" in command
    # $$ so that the container's shell, not compose, expands the worker count.
    assert "--workers $${WEB_CONCURRENCY:-2}" in command
    assert services["web"]["ports"] == ["8000:8000"]


def test_worker_runs_a_celery_worker(services):
    command = _command(services["worker"])
    assert command.startswith("celery -A config worker")
    assert "--concurrency=2" in command


def test_beat_runs_celery_beat_with_a_writable_schedule(services):
    command = _command(services["beat"])
    assert command.startswith("celery -A config beat")
    assert "--schedule /tmp/celerybeat-schedule" in command


def test_migrate_is_a_one_shot_migration(services):
    migrate = services["migrate"]
    assert _command(migrate) == "python manage.py migrate --noinput"
    # Quoted in the file: a bare `no` is YAML 1.1 for False.
    assert migrate["restart"] == "no"
    assert "healthcheck" not in migrate
    assert "ports" not in migrate


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_a_healthcheck(services, name):
    test = _healthcheck_test(services[name])
    assert test[0] in ("CMD", "CMD-SHELL"), test
    assert len(test) >= 2, test
    assert all(isinstance(part, str) and part for part in test), test


def test_postgres_healthcheck_uses_pg_isready(services):
    test = _healthcheck_test(services["postgres"])
    assert test[:4] == ["CMD", "pg_isready", "-U", "postgres"]


def test_redis_healthcheck_pings(services):
    test = _healthcheck_test(services["redis"])
    assert test[0] == "CMD-SHELL"
    assert test[1].startswith("redis-cli ping")


def test_web_healthcheck_gets_healthz_with_urllib(services):
    snippet = _python_c_snippet(services["web"])
    assert "urllib.request" in snippet
    assert "'http://127.0.0.1:8000/healthz'" in snippet
    compile(snippet, "<web healthcheck>", "exec")


def test_worker_healthcheck_pings_its_own_node(services):
    test = _healthcheck_test(services["worker"])
    assert test == [
        "CMD-SHELL",
        "celery -A config inspect ping -d celery@$$HOSTNAME --timeout 5",
    ]


def test_beat_healthcheck_checks_the_beat_process(services):
    snippet = _python_c_snippet(services["beat"])
    assert "/proc/1/cmdline" in snippet
    assert "b'beat'" in snippet
    compile(snippet, "<beat healthcheck>", "exec")


@pytest.mark.parametrize("name", APP_LONG_RUNNING)
def test_app_services_wait_for_healthy_infra_and_finished_migrations(services, name):
    assert services[name]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }


def test_migrate_waits_for_healthy_infra(services):
    assert services["migrate"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_restart_unless_stopped(services, name):
    assert services[name]["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_point_at_the_compose_database_and_redis(services, name):
    env = _environment(services[name])
    assert env["DATABASE_URL"] == "postgres://postgres:postgres@postgres:5432/livestream"
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    # The hostnames are the compose service names.
    assert urlsplit(env["DATABASE_URL"]).hostname in services
    assert urlsplit(env["REDIS_URL"]).hostname in services
    assert env["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
    assert env["SECRET_KEY"] == "${SECRET_KEY:?set SECRET_KEY}"
    assert env["ALLOWED_HOSTS"] == "${ALLOWED_HOSTS:-localhost,127.0.0.1}"
    assert env["SECURE_SSL_REDIRECT"] == "${SECURE_SSL_REDIRECT:-false}"
    assert env["DB_POOL_MAX_SIZE"] == "8"


def test_database_url_matches_the_postgres_service(services):
    pg_env = _environment(services["postgres"])
    url = urlsplit(_environment(services["web"])["DATABASE_URL"])
    assert url.scheme == "postgres"
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert url.username == "postgres"
    assert url.password == pg_env["POSTGRES_PASSWORD"]
    assert url.path == "/" + pg_env["POSTGRES_DB"] == "/livestream"


def test_redis_persists_to_a_named_volume(compose, services):
    redis = services["redis"]
    assert _command(redis) == "redis-server --appendonly yes"
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]


def test_postgres_data_is_on_a_named_volume(compose, services):
    mounts = dict(v.split(":", 1) for v in services["postgres"]["volumes"])
    data_volume = {target: source for source, target in mounts.items()}["/var/lib/postgresql/data"]
    assert data_volume in compose["volumes"]


def test_only_web_publishes_a_port(services):
    assert [name for name, svc in services.items() if "ports" in svc and "profiles" not in svc] == [
        "web"
    ]
    # The monitoring profile's consoles listen on the host's loopback only.
    for name in ("prometheus", "grafana"):
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name


# --- Dockerfile -----------------------------------------------------------------------


def test_dockerfile_base_image_and_port():
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert ("EXPOSE", "8000") in instructions


def test_dockerfile_cmd_runs_uvicorn_on_the_asgi_application():
    commands = [args for ins, args in _dockerfile_instructions() if ins in ("CMD", "ENTRYPOINT")]
    assert len(commands) == 1, commands
    argv = json.loads(commands[0])  # exec form
    assert argv[:2] == ["sh", "-c"]
    shell_command = argv[2]
    assert shell_command.startswith("exec uvicorn config.asgi:application ")
    tokens = shlex.split(shell_command)
    assert tokens[tokens.index("--host") + 1] == "0.0.0.0"
    assert tokens[tokens.index("--port") + 1] == "8000"
    assert tokens[tokens.index("--workers") + 1] == "${WEB_CONCURRENCY:-2}"
    assert "--no-proxy-headers" in tokens
    assert "--proxy-headers" not in tokens
    assert tokens[tokens.index("--ws-per-message-deflate") + 1] == "false"
    assert tokens[tokens.index("--ws-max-size") + 1] == "16384"


def test_dockerfile_runs_as_a_non_root_user():
    users = [args for ins, args in _dockerfile_instructions() if ins == "USER"]
    assert users, "no USER instruction: the container would run as root"
    assert users[-1] not in ("root", "0", "0:0")
    # The last USER comes after the last RUN, so nothing undoes it.
    kinds = [ins for ins, _ in _dockerfile_instructions()]
    last_run = max(i for i, ins in enumerate(kinds) if ins == "RUN")
    last_user = max(i for i, ins in enumerate(kinds) if ins == "USER")
    assert last_user > last_run


def test_dockerfile_installs_the_project_and_collects_static_files():
    runs = [args for ins, args in _dockerfile_instructions() if ins == "RUN"]
    assert any(re.search(r"\bpip install --no-cache-dir \.(\s|$)", run) for run in runs)
    collect = [run for run in runs if "manage.py collectstatic --noinput" in run]
    assert len(collect) == 1
    assert "DJANGO_SETTINGS_MODULE=config.settings.production" in collect[0]
    assert "SECRET_KEY=" in collect[0]
    assert "ALLOWED_HOSTS=" in collect[0]
    # The build-time dummy key must not become part of the image's environment.
    envs = " ".join(args for ins, args in _dockerfile_instructions() if ins in ("ENV", "ARG"))
    assert "SECRET_KEY" not in envs


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    entries = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    expected = {
        ".venv",
        ".git",
        "db.sqlite3*",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        "staticfiles",
        "test-artifacts",
        "bench/results",
    }
    assert expected <= entries
    assert "__pycache__" in entries or "**/__pycache__" in entries


def test_the_run_script_declines_websocket_compression_and_caps_frames_too():
    run = (Path(__file__).resolve().parents[2] / "scripts" / "run").read_text()
    lines = run.replace("\\\n", " ").splitlines()  # continued lines joined
    [command] = [line for line in lines if line.startswith("exec uvicorn")]
    assert "--ws-per-message-deflate false" in command
    assert "--ws-max-size 16384" in command
    assert "--no-proxy-headers" in command
