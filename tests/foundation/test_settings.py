"""Settings modes, checked in fresh interpreters with controlled environments."""

import json
import os
import secrets
import subprocess
import sys

from tests.processes import ROOT

PROBE = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "layer": getattr(settings, "CHANNEL_LAYERS", None),
    "cache": settings.CACHES["default"]["BACKEND"],
    "broker": settings.CELERY_BROKER_URL,
    "eager": settings.CELERY_TASK_ALWAYS_EAGER,
    "pool": settings.DATABASES["default"].get("OPTIONS", {}).get("pool"),
    "debug": settings.DEBUG,
}))
"""

SETTINGS_VARS = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_TASK_ALWAYS_EAGER",
    "DB_POOL_MAX_SIZE",
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "PAYMENT_WEBHOOK_SECRET",
)


def _run(module: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": module, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _settings(module: str, **env: str) -> dict:
    result = _run(module, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_embedded_default_needs_no_servers():
    assert _settings("config.settings.base") == {
        "engine": "django.db.backends.sqlite3",
        "layer": None,  # events reach sockets through the hub, in process
        "cache": "django.core.cache.backends.locmem.LocMemCache",
        "broker": "memory://",
        "eager": True,
        "pool": None,
        "debug": True,
    }


def test_urls_switch_to_postgres_and_redis():
    found = _settings(
        "config.settings.base",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/livestream",
        REDIS_URL="redis://127.0.0.1:6379/3",
        DB_POOL_MAX_SIZE="6",
    )

    assert found["engine"] == "django.db.backends.postgresql"
    assert found["layer"] is None  # the hub's pub/sub carries events between processes
    assert found["cache"] == "core.cache.SharedPoolRedisCache"
    assert found["broker"] == "redis://127.0.0.1:6379/3"
    assert found["eager"] is False
    assert found["pool"] == {"min_size": 1, "max_size": 6, "timeout": 10.0}


def test_production_refuses_to_start_without_a_webhook_secret():
    result = _run(
        "config.settings.production",
        ALLOWED_HOSTS="shop.example.com",
        SECRET_KEY=secrets.token_urlsafe(64),
        PAYMENT_WEBHOOK_SECRET="",
    )

    assert result.returncode != 0
    # The refusal itself, not a NameError on the way to it.
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        "django.core.exceptions.ImproperlyConfigured: "
        "PAYMENT_WEBHOOK_SECRET must not be empty in production."
    )
    assert "NameError" not in result.stderr


def test_production_refuses_to_start_without_a_secret_key():
    result = _run("config.settings.production", ALLOWED_HOSTS="shop.example.com")

    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_passes_the_deploy_check_with_proper_values():
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "PAYMENT_WEBHOOK_SECRET": secrets.token_urlsafe(32),
            "ALLOWED_HOSTS": "shop.example.com",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
