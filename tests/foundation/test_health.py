import pytest

from config import health


@pytest.mark.django_db
def test_healthz_says_alive(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_on_the_embedded_default_is_ready(client, settings):
    settings.REDIS_URL = ""

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "not configured", "celery": "eager"},
    }


@pytest.mark.django_db
def test_readyz_names_redis_when_it_does_not_answer(client, settings):
    # Nothing listens on port 1.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "not_ready"
    assert body["down"] == ["redis"]
    assert body["detail"] == "unavailable: redis"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("down: ConnectionError")


@pytest.mark.django_db
def test_readyz_names_the_database_and_celery_when_they_fail(client, settings, monkeypatch):
    settings.REDIS_URL = ""

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setitem(health.READINESS_CHECKS, "database", broken)
    monkeypatch.setitem(health.READINESS_CHECKS, "celery", broken)

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["database", "celery"]
    assert body["checks"]["database"] == "down: RuntimeError: boom"
    assert body["checks"]["redis"] == "not configured"


@pytest.mark.redis
@pytest.mark.django_db
def test_readyz_reports_celery_down_when_no_worker_answers(client, settings):
    from config.celery import app

    app.conf.task_always_eager = False
    try:
        response = client.get("/readyz")
    finally:
        app.conf.task_always_eager = True

    body = response.json()
    assert response.status_code == 503
    assert body["down"] == ["celery"]
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["celery"] == "down: RuntimeError: no Celery worker answered"


def test_readyz_rejects_other_methods(client):
    response = client.post("/readyz")

    assert response.status_code == 405
