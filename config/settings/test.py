"""Tests: the embedded default unless DATABASE_URL / REDIS_URL point at real servers.

CI sets both, plus REQUIRE_SERVICES=1 so that a test needing a service that does not
answer fails instead of being skipped (see tests/conftest.py).
"""

import os

# Every test thread must hold a real connection of its own (races are tested with
# real concurrent connections), so no pool.
os.environ.setdefault("DB_POOL_MAX_SIZE", "0")
# Request rates high enough not to get in the way; throttle tests set their own.
for _scope in ("RESERVE_USER", "RESERVE_IP", "AUTH_IP"):
    os.environ.setdefault(f"THROTTLE_{_scope}", "100000/min")
# Tests sign in a lot, from one address; the lockout tests set their own limit.
os.environ.setdefault("LOGIN_FAILURE_LIMIT", "1000")

from .base import *
from .base import BASE_DIR, DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests decide per test whether Celery runs eagerly or through a real worker.
CELERY_TASK_ALWAYS_EAGER = True

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory: server and worker processes started by the tests share it.
    # One per test run, so that runs side by side do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f"test-db-{os.getpid()}.sqlite3")}

# Counter events go out on every change, synchronously (the coalescing tests and the
# real server processes use a window).
BROADCAST_COALESCE_MS = 0
VIEWERS_COALESCE_MS = 0
