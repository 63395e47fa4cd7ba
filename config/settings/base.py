"""Settings shared by every mode, driven by the environment.

With no URLs set this is the *embedded default*: SQLite, live events handed over in
memory, a local-memory cache and Celery running tasks eagerly in process. Setting
``REDIS_URL`` switches the live events (pub/sub), the cache, the admission gate and the
Celery broker to Redis; setting ``DATABASE_URL`` switches to PostgreSQL. Every variable
is listed with its default in ``.env.example``.
"""

import warnings
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# A local .env file is a convenience for development; the real environment wins.
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-key-change-me")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "import_export",
    "axes",
    "core",
    "shop",
    "inventory",
    "livestream",
    # Above livestream: they import livestream, never the other way round.
    "draws",
    "demand",
    # On top: it reads every room's figures and no room imports it.
    "monitoring",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a locked-out sign-in into its refusal.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# A Celery worker process keeps its (plain, unpooled) connection this long between tasks
# (config/celery.py).
WORKER_CONN_MAX_AGE = env.int("WORKER_CONN_MAX_AGE", default=60)
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASE_IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
if DATABASE_IS_POSTGRES:
    # One pool per process. Size it so that
    #   (ASGI processes + Celery worker processes) x DB_POOL_MAX_SIZE
    # stays under PostgreSQL's max_connections (100 here). 0 disables pooling, which is
    # what the tests use: every test thread then holds a real connection of its own.
    _pool_max = env.int("DB_POOL_MAX_SIZE", default=8)
    if _pool_max > 0:
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DB_POOL_MIN_SIZE", default=1),
            "max_size": _pool_max,
            "timeout": env.float("DB_POOL_TIMEOUT", default=10.0),
        }
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    # SQLite: take the write lock at BEGIN so that concurrent writers queue instead of
    # failing with "database is locked" when a read lock cannot be upgraded.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: gate, cache, live events, broker -------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# redis-py's pool raises "Too many connections" past its size under a connect storm:
# size it for the peak number of concurrent requests one process serves.
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=200)

if REDIS_URL:
    CACHES = {
        "default": {
            # One pool per process, not per request thread (core/cache.py); a blocking
            # pool, bounded like the gate's: callers wait for a free connection.
            "BACKEND": "core.cache.SharedPoolRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "cache",
            "OPTIONS": {
                "pool_class": "redis.BlockingConnectionPool",
                "max_connections": REDIS_MAX_CONNECTIONS,
                "timeout": 5,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# No channel layer: events reach websockets through each process's hub
# (``livestream.hub``), over Redis pub/sub when REDIS_URL is set, in process when not.

# --- Celery ---------------------------------------------------------------------------
# No broker configured: tasks run eagerly in process (the embedded default).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL) or "memory://"
CELERY_TASK_ALWAYS_EAGER = env.bool(
    "CELERY_TASK_ALWAYS_EAGER", default=CELERY_BROKER_URL == "memory://"
)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A task is acknowledged only after it ran, and redelivered if its worker dies: every
# task is idempotent, so running one twice is safe and losing one is not.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# The visibility timeout must exceed the longest countdown/ETA any task uses, or Redis
# redelivers the task while it still waits.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes a worker's database connection before and after every
# task unless told to reuse it: here it closes one every this many tasks, and
# config/celery.py drops a broken or aged one between tasks as Django does per request.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "expire-holds": {
        "task": "inventory.expire_holds",
        "schedule": env.float("HOLD_SWEEP_SECONDS", default=5.0),
    },
    "reconcile": {
        "task": "inventory.reconcile",
        "schedule": env.float("RECONCILE_SECONDS", default=60.0),
    },
    "flush-counters": {
        "task": "livestream.flush_counters",
        "schedule": env.float("COUNTER_SWEEP_SECONDS", default=5.0),
    },
    "flush-demand": {
        "task": "demand.flush_demand",
        "schedule": env.float("DEMAND_FLUSH_SECONDS", default=10.0),
    },
    "drop-schedule": {
        "task": "livestream.run_drop_schedule",
        "schedule": env.float("DROP_SCHEDULE_SECONDS", default=1.0),
    },
    "draws-due": {
        "task": "draws.run_due",
        "schedule": env.float("DRAW_SWEEP_SECONDS", default=2.0),
    },
    "reconcile-payments": {
        "task": "shop.reconcile_payments",
        "schedule": env.float("PAYMENT_RECONCILE_SECONDS", default=60.0),
    },
}

# --- Auth, API ------------------------------------------------------------------------
# The client's address (per-IP throttles, sign-in lockout) is REMOTE_ADDR unless this
# many reverse proxies in front of the server each append to X-Forwarded-For: then it
# is the entry the outermost proxy wrote. 0 never reads X-Forwarded-For, which any
# client can set. The server itself never rewrites the address (--no-proxy-headers).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
AUTHENTICATION_BACKENDS = [
    # The lockout (django-axes) first: a locked-out client is refused before any hash.
    "shop.lockout.LockoutBackend",
    # Django's model backend, with the password hash run off the database connection
    # and a few at a time (shop/passwords.py): a sign-in surge never waits on the pool.
    "shop.passwords.PasswordBackend",
]
# New passwords are hashed with Argon2id, 64 MiB and 3 passes (shop/passwords.py has the
# figures behind the choice). After it, Django's default list, unchanged: hashes made
# before (PBKDF2) still verify, and are rehashed with the first at the next sign-in.
PASSWORD_HASHERS = [
    "shop.passwords.Argon2idPasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
# Password hashes run at once per process (CPU-bound; the rest queue holding no
# database connection), each taking 64 MiB while it runs. 0: one per core this process
# may use.
PASSWORD_HASH_CONCURRENCY = env.int("PASSWORD_HASH_CONCURRENCY", default=0)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.api.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's JSON parser with limits on nesting and text (see core/api/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["core.api.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.StrictLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Only for DRF's own use of it; our throttles call core.api.throttles.client_address.
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
    # Scoped request rates (see core/api/throttles.py), counted in the shared cache.
    "DEFAULT_THROTTLE_RATES": {
        "reserve_user": env.str("THROTTLE_RESERVE_USER", default="30/min"),
        "reserve_ip": env.str("THROTTLE_RESERVE_IP", default="600/min"),
        "auth_ip": env.str("THROTTLE_AUTH_IP", default="30/min"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Live-stream shopping API",
    "DESCRIPTION": "Drops, atomic stock reservations, checkout and live counters. "
    'Every error is `{"code": ..., "detail": ...}` with a stable machine `code`.',
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "PATH_CONVERTER_OVERRIDES": {
        "id": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_999}
    },
    "ENUM_NAME_OVERRIDES": {
        "StreamStatusEnum": "livestream.models.Stream.Status",
        "ReservationStatusEnum": "inventory.models.Reservation.Status",
    },
}

# Request bodies are capped by the server before Django reads them (core/body_limit.py):
# 413 past these sizes. No API body comes near 64 KiB; admin imports may be bigger.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=64 * 1024)
REQUEST_MAX_BODY_BYTES = env.int("REQUEST_MAX_BODY_BYTES", default=10 * 1024 * 1024)

# Sign-in lockout (django-axes) on /accounts/login/, /admin/login/ and the API token:
# after LOGIN_FAILURE_LIMIT failures for one username from one client address, that
# pair is refused (429) for LOGIN_LOCKOUT_SECONDS, even with the right password. Per
# pair: nobody can lock a user out from elsewhere, and a venue sharing one address is
# not locked for one guest's typos (per-address rates are the throttles' job).
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("LOGIN_LOCKOUT_SECONDS", default=900))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "core.api.throttles.client_address"
AXES_LOCKOUT_CALLABLE = "core.api.errors.locked_out"
# Counted in Redis when configured (shared by every process, no SQL on the sign-in
# path), else in the database: the local-memory cache is per process.
AXES_HANDLER = (
    "axes.handlers.cache.AxesCacheHandler"
    if REDIS_URL
    else "axes.handlers.database.AxesDatabaseHandler"
)
# Successes are not written down: a sign-in surge writes no rows.
AXES_DISABLE_ACCESS_LOG = True

# --- I18N, static ---------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve straight from the apps' static folders, so the embedded default needs no
# collectstatic; production collects and serves hashed, compressed files instead.
WHITENOISE_USE_FINDERS = True
# ...so STATIC_ROOT not existing yet is expected there, not worth a warning per process.
warnings.filterwarnings("ignore", message="No directory at: .*staticfiles")

# LOG_FORMAT "json": one JSON object per line (python-json-logger) with the request id
# carried from HTTP into the Celery tasks it queues (core/request_context.py); "text",
# the default, for a person reading a terminal. LOG_REQUESTS: an access line per HTTP
# request (method, path without its query, status, duration) on the "access" logger.
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOG_REQUESTS = env.bool("LOG_REQUESTS", default=False)
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.request_context.RequestIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
# JSON logs: a Celery worker keeps the LOGGING above (Celery would replace the root
# handlers with its own text format); text logs keep Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT == "text"

# --- Live streams ---------------------------------------------------------------------
# Counter events (stock.changed, viewers.changed) per drop or stream are sent at most
# once per window, the last value always delivered; 0 sends every change.
BROADCAST_COALESCE_MS = env.int("BROADCAST_COALESCE_MS", default=250)
# The ASGI server's cyclic garbage collector thresholds (generations 0, 1, 2; Python's
# default is 700, 10, 10): see config/asgi.py.
ASGI_GC_THRESHOLDS = tuple(env.list("ASGI_GC_THRESHOLDS", cast=int, default=[7_000, 10, 1_000]))
# The viewer count changes with every arrival: in a connect storm each of its events
# goes to every viewer, so it is coalesced over a longer window (nobody needs it faster).
VIEWERS_COALESCE_MS = env.int("VIEWERS_COALESCE_MS", default=1000)
# Presence: each process refreshes its viewers this often; a viewer not refreshed for
# the TTL (its process died) is no longer counted.
PRESENCE_HEARTBEAT_SECONDS = env.int("PRESENCE_HEARTBEAT_SECONDS", default=10)
PRESENCE_TTL_SECONDS = env.int("PRESENCE_TTL_SECONDS", default=30)
# How often the host's console gets host.stats.
HOST_STATS_SECONDS = env.float("HOST_STATS_SECONDS", default=2.0)
# Websockets one server process holds at most, in all and per client address (behind
# TRUSTED_PROXY_COUNT proxies, from X-Forwarded-For); past either a new socket is closed
# at once (4503, 4429) with a retry hint of this many seconds, jittered up to twice
# that (livestream/ws_limits.py). 0: no cap. An address is often many people (a venue's
# wifi, a mobile carrier's NAT shares one among thousands): its cap is generous.
WS_MAX_CONNECTIONS_PER_PROCESS = env.int("WS_MAX_CONNECTIONS_PER_PROCESS", default=15_000)
WS_MAX_CONNECTIONS_PER_ADDRESS = env.int("WS_MAX_CONNECTIONS_PER_ADDRESS", default=1_000)
# A process whose event loop runs this late refuses new sockets (4503 server_busy) until
# it has caught up; its viewers' frames are that late already (livestream/ws_limits.py).
WS_SHED_LOOP_LAG_MS = env.int("WS_SHED_LOOP_LAG_MS", default=1000)
WS_RETRY_AFTER_SECONDS = env.int("WS_RETRY_AFTER_SECONDS", default=5)

# --- Shop -----------------------------------------------------------------------------
DEFAULT_CURRENCY = env.str("DEFAULT_CURRENCY", default="USD")
# The payment provider (a class implementing shop.payments.PaymentProvider). The test
# provider calls no network: PAYMENT_TEST_MODE says whether charges succeed at once,
# fail, or stay pending until a signed webhook confirms them.
PAYMENT_PROVIDER = env.str("PAYMENT_PROVIDER", default="shop.payments.TestPaymentProvider")
PAYMENT_TEST_MODE = env.str("PAYMENT_TEST_MODE", default="succeed")
# Empty: every webhook is refused.
PAYMENT_WEBHOOK_SECRET = env.str("PAYMENT_WEBHOOK_SECRET", default="")
PAYMENT_WEBHOOK_TOLERANCE_SECONDS = env.int("PAYMENT_WEBHOOK_TOLERANCE_SECONDS", default=300)

# --- Inventory ------------------------------------------------------------------------
# The Redis admission gate runs whenever REDIS_URL is set, unless switched off here.
INVENTORY_GATE_ENABLED = env.bool("INVENTORY_GATE_ENABLED", default=True)
# With the gate on, the reserve request's refusals and replays are answered ahead of
# Django by one Redis script (livestream/front_door.py); off: Django answers them all.
FRONT_DOOR_ENABLED = env.bool("FRONT_DOOR_ENABLED", default=True)
# The door also answers anonymous ``GET /api/streams/{slug}/`` from the snapshot Django
# last rendered, never older than this (livestream/snapshot_cache.py); 0: Django answers.
STREAM_SNAPSHOT_MAX_AGE_MS = env.int("STREAM_SNAPSHOT_MAX_AGE_MS", default=1000)
# How long a hold lasts before it expires and its units return.
RESERVATION_HOLD_SECONDS = env.int("RESERVATION_HOLD_SECONDS", default=600)
# A unit offered to the first viewer on a waitlist is theirs for this long.
WAITLIST_OFFER_SECONDS = env.int("WAITLIST_OFFER_SECONDS", default=60)
# A draw winner's offer: long enough to check out after hearing the result.
DRAW_WIN_HOLD_SECONDS = env.int("DRAW_WIN_HOLD_SECONDS", default=600)
# At the close, how long the draw waits for entries Redis accepted to be written
# (a batch commits in milliseconds; one still missing after this was never answered).
DRAW_DURABLE_WAIT_SECONDS = env.float("DRAW_DURABLE_WAIT_SECONDS", default=5.0)
# The entry challenge's provider (a class implementing draws.challenge.ChallengeProvider).
# The test provider needs no network.
DRAW_CHALLENGE_PROVIDER = env.str(
    "DRAW_CHALLENGE_PROVIDER", default="draws.challenge.TestChallengeProvider"
)
# Pending holds the reserve task settles in one transaction (the commit is the ceiling).
# 200 keeps the allocation row locked for about 25 ms per batch on a small machine.
RESERVATION_SETTLE_BATCH = env.int("RESERVATION_SETTLE_BATCH", default=200)
# A hard cap of simultaneously active (pending or held) holds per customer.
RESERVATION_MAX_ACTIVE_PER_CUSTOMER = env.int("RESERVATION_MAX_ACTIVE_PER_CUSTOMER", default=20)

# --- metrics (monitoring/): Prometheus scrapes /metrics; never public ----------------
# A scrape is served to these networks, or to any client with this bearer token. The
# peer's own address counts (a scraper reaches the process directly, not through the
# proxy), so keep the proxy from forwarding /metrics.
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# A Celery worker serves its processes' figures on this port (0: none), on this address.
METRICS_WORKER_PORT = env.int("METRICS_WORKER_PORT", default=0)
METRICS_WORKER_BIND = env.str("METRICS_WORKER_BIND", default="127.0.0.1")
# The Celery queues whose length a scrape reads from the broker.
METRICS_CELERY_QUEUES = env.list("METRICS_CELERY_QUEUES", default=["celery"])
# How often a web process copies its database pool's figures into its metrics (0: never).
METRICS_POOL_SAMPLE_SECONDS = env.float("METRICS_POOL_SAMPLE_SECONDS", default=5.0)
