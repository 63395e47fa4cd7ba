"""``Idempotency-Key`` for unsafe requests: the same key and body get the first answer
again (decisions included, e.g. a 409 sold_out), the same key with another body a
``422 idempotency_key_reused``. Answers are kept for 24 hours, scoped per user, so a
replay costs no SQL: in Redis when it is configured, as a hash of the request's
fingerprint, the status and the body's JSON text, which the front door's script
(``livestream/front_door.py``) reads and writes too; in the local cache otherwise."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from django.core.cache import cache
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from core.exceptions import DomainError, IdempotencyKeyReused
from core.keys import KEEP_SECONDS, KEY_PATTERN, MAX_KEY_LENGTH
from core.redis import get_redis, redis_configured

HEADER = "Idempotency-Key"
_KEY = re.compile(KEY_PATTERN)


def idempotency_key_of(request: Request) -> str:
    key = request.headers.get(HEADER, "")
    if not _KEY.match(key):
        raise ValidationError(
            {HEADER: [f"1 to {MAX_KEY_LENGTH} printable ASCII characters, no spaces."]}
        )
    return key


def request_fingerprint(method: str, path: str, data) -> str:
    """What makes two requests with one key the same request: method, path and body."""
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{body}".encode()).hexdigest()


def answer_key(user_id, key: str) -> str:
    """Where the answer to this user's key is kept."""
    return f"api:idem:{user_id}:{hashlib.sha256(key.encode()).hexdigest()}"


def _stored(cache_key: str) -> dict | None:
    if not redis_configured():
        return cache.get(cache_key)
    fingerprint, status, body = get_redis().hmget(cache_key, "fp", "status", "body")
    if fingerprint is None:
        return None
    return {"fingerprint": fingerprint, "status": int(status), "body": json.loads(body)}


@dataclass(frozen=True)
class StoredAnswer:
    cache_key: str
    fingerprint: str
    status: int
    body: object


def answer_store(cache_key: str, *, fingerprint: str, status: int, body) -> None:
    answers_store([StoredAnswer(cache_key, fingerprint, status, body)])


def answers_store(answers: list[StoredAnswer]) -> list[bytes]:
    """Keep these answers (one round trip to Redis); returns each body as rendered."""
    # The body as the API renders it, so a replay from either path is the same text.
    rendered = [JSONRenderer().render(answer.body) for answer in answers]
    if not redis_configured():
        for answer in answers:
            cache.set(
                answer.cache_key,
                {"fingerprint": answer.fingerprint, "status": answer.status, "body": answer.body},
                KEEP_SECONDS,
            )
        return rendered
    pipe = get_redis().pipeline(transaction=False)
    for answer, text in zip(answers, rendered, strict=True):
        fields = {"fp": answer.fingerprint, "status": answer.status, "body": text.decode()}
        pipe.hset(answer.cache_key, mapping=fields)
        pipe.expire(answer.cache_key, KEEP_SECONDS)
    pipe.execute()
    return rendered


def idempotent(request: Request, *, key: str, answer: Callable[[], Response]) -> Response:
    """Answer through ``answer()`` once per (user, key); replay the stored answer after.

    Domain decisions (``DomainError``) are stored like successes: a retry of a request
    turned away as sold out is told sold out again, even if a unit came back since.
    """
    cache_key = answer_key(request.user.pk, key)
    fingerprint = request_fingerprint(request.method, request.path, request.data)
    stored = _stored(cache_key)
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
        answer_store(
            cache_key, fingerprint=fingerprint, status=response.status_code, body=response.data
        )
    return response
