import os

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun, worker_init

from core import request_context

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("livestream_shopping")
# A worker's database connections show under this name in pg_stat_activity.
WORKER_APP_NAME = "livestream-celery-worker"
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# The request id of whatever queued a task is its log lines' id in the worker too.
before_task_publish.connect(request_context.add_request_id_to_task, weak=False)
task_prerun.connect(request_context.set_request_id_of_task, weak=False)
task_postrun.connect(request_context.clear_request_id_of_task, weak=False)


@worker_init.connect
def _plain_database_connections_in_workers(**_kwargs) -> None:
    """A worker process runs one task at a time, and Celery's Django fixup closes a
    prefork child's connection pool after every task: a thread still using it then (the
    broadcast coalescer's trailing send, which runs after the task that armed it) fails
    with "the pool is closed". So workers use plain connections; the pool is for the
    ASGI server's many threads. Kept open between tasks (``WORKER_CONN_MAX_AGE``, and
    ``CELERY_DB_REUSE_MAX`` so that the fixup does not close it after each task): a
    connection per task cost a sixth of the worker's CPU while admissions poured in."""
    # Imported when the signal fires: this module loads with the config package, which
    # Django's settings module itself belongs to.
    from django.conf import settings

    for database in settings.DATABASES.values():
        if database.get("OPTIONS", {}).pop("pool", None) is not None:
            database["CONN_MAX_AGE"] = settings.WORKER_CONN_MAX_AGE
        if database["ENGINE"] == "django.db.backends.postgresql":
            # Which connections are the workers' (ops, in pg_stat_activity).
            database.setdefault("OPTIONS", {}).setdefault("application_name", WORKER_APP_NAME)


@task_prerun.connect
@task_postrun.connect
def _drop_broken_or_aged_connections(task=None, **_kwargs) -> None:
    """What Django does around a request: close the connections that errored and no
    longer answer, or outlived ``CONN_MAX_AGE``; the next query opens a fresh one (a
    database restart costs the task in flight a retry, not every task after it)."""
    if task is not None and getattr(task.request, "is_eager", False):
        return  # in the caller's process: its own request cycle owns the connection
    from django.db import close_old_connections  # as above: not while config loads

    close_old_connections()
