# Image for the web (uvicorn), Celery worker, Celery beat and migrate services.
FROM python:3.11-slim

# PYTHONPATH: `pip install .` also puts the packages in site-packages; keep the copy in
# /app first on the path so BASE_DIR (and so STATIC_ROOT) is /app for every process.
# DJANGO_SETTINGS_MODULE: secure by default; production settings refuse to start
# without SECRET_KEY and ALLOWED_HOSTS instead of falling back to DEBUG and a dev key.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=config.settings.production

WORKDIR /app

RUN groupadd --system app \
    && useradd --system --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    # Where the web and worker processes write their metrics for a scrape to sum
    # (PROMETHEUS_MULTIPROC_DIR, set in docker-compose.yml; monitoring/registry.py).
    && install -d -o app -g app /tmp/metrics

# setuptools package discovery needs the sources, so the dependency layer cannot be
# cached apart from the code: copy everything (.dockerignore trims it) and install.
COPY . .
RUN pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info

# Hashed, compressed static files for WhiteNoise. The key and hosts are build-time
# dummies that exist only for this RUN line; the real ones come from the runtime env.
RUN SECRET_KEY=collectstatic-build-only-not-a-secret \
    PAYMENT_WEBHOOK_SECRET=collectstatic-build-only \
    ALLOWED_HOSTS=localhost \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    python manage.py collectstatic --noinput

USER app

EXPOSE 8000

# sh -c so ${WEB_CONCURRENCY} expands at run time; exec so uvicorn is PID 1 and gets
# SIGTERM. --no-proxy-headers: uvicorn never takes the client's address from
# X-Forwarded-For; behind reverse proxies, TRUSTED_PROXY_COUNT tells the app how many
# there are (README.md, "Behind a proxy").
# No permessage-deflate: see "Why uvicorn" in README.md. --ws-max-size: a websocket
# message is capped before it is buffered (the consumers allow 4 KB).
CMD ["sh", "-c", "exec uvicorn config.asgi:application --host 0.0.0.0 --port 8000 --workers ${WEB_CONCURRENCY:-2} --no-proxy-headers --ws-per-message-deflate false --ws-max-size 16384"]
