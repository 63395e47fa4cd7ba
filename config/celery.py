import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("livestream_shopping")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _plain_database_connections_in_workers(**_kwargs) -> None:
    """A worker process runs one task at a time, and Celery's Django fixup closes a
    prefork child's connection pool after every task: a thread still using it then (the
    broadcast coalescer's trailing send, which runs after the task that armed it) fails
    with "the pool is closed". So workers use plain connections; the pool is for the
    ASGI server's many threads. Kept open between tasks (``WORKER_CONN_MAX_AGE``, the
    fixup closes only obsolete or broken ones): a connection per task cost a sixth of the
    worker's CPU while admissions poured in."""
    from django.conf import settings

    for database in settings.DATABASES.values():
        if database.get("OPTIONS", {}).pop("pool", None) is not None:
            database["CONN_MAX_AGE"] = settings.WORKER_CONN_MAX_AGE
