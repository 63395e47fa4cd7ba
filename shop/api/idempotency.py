"""``Idempotency-Key`` for unsafe requests: the same key and body get the first answer
again (decisions included, e.g. a 409 sold_out), the same key with another body a
``422 idempotency_key_reused``. Answers are kept in the cache (Redis when configured)
for 24 hours, scoped per user, so a replay costs no SQL."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

from django.core.cache import cache
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from inventory.exceptions import DomainError, IdempotencyKeyReused

HEADER = "Idempotency-Key"
KEEP_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255
# Printable ASCII (a UUID is the usual choice); the OpenAPI schema states the same.
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
_KEY = re.compile(KEY_PATTERN)


def idempotency_key_of(request: Request) -> str:
    key = request.headers.get(HEADER, "")
    if not _KEY.match(key):
        raise ValidationError(
            {HEADER: [f"1 to {MAX_KEY_LENGTH} printable ASCII characters, no spaces."]}
        )
    return key


def _fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def idempotent(request: Request, *, key: str, answer: Callable[[], Response]) -> Response:
    """Answer through ``answer()`` once per (user, key); replay the stored answer after.

    Domain decisions (``DomainError``) are stored like successes: a retry of a request
    turned away as sold out is told sold out again, even if a unit came back since.
    """
    digest = hashlib.sha256(key.encode()).hexdigest()
    cache_key = f"idem:{request.user.pk}:{digest}"
    fingerprint = _fingerprint(request)
    stored = cache.get(cache_key)
    if stored is not None:
        if stored["fingerprint"] != fingerprint:
            raise IdempotencyKeyReused()
        return Response(
            stored["body"], status=stored["status"], headers={"Idempotent-Replay": "true"}
        )
    try:
        response = answer()
    except DomainError as exc:
        if isinstance(exc, IdempotencyKeyReused) or exc.retryable:
            raise
        response = Response(exc.body(), status=exc.http_status)
    if response.status_code < 500:
        cache.set(
            cache_key,
            {"fingerprint": fingerprint, "status": response.status_code, "body": response.data},
            KEEP_SECONDS,
        )
    return response
