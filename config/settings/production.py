"""Production: secrets from the environment, HTTPS everywhere, hashed static files.

``manage.py check --deploy`` passes with no warnings once SECRET_KEY (50+ random
characters), ALLOWED_HOSTS, DATABASE_URL and REDIS_URL are set.
"""

from django.core.exceptions import ImproperlyConfigured

from .base import *
from .base import STORAGES, env

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY")  # no default: refuse to start without one
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
# Webhooks from the payment provider are verified with this secret.
PAYMENT_WEBHOOK_SECRET = env.str("PAYMENT_WEBHOOK_SECRET")
if not PAYMENT_WEBHOOK_SECRET:
    raise ImproperlyConfigured("PAYMENT_WEBHOOK_SECRET must not be empty in production.")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Health probes come from the orchestrator over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = False
