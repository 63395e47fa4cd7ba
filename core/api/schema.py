"""OpenAPI pieces shared by every endpoint: the error body and what each status means."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine code, e.g. `sold_out`.")
    detail = serializers.CharField(help_text="Human-readable explanation.")


class ValidationErrorSerializer(ErrorSerializer):
    errors = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="Messages per field (absent when the body could not be parsed at all).",
    )


ERROR_MEANINGS = {
    400: ("invalid", "Bad input; `errors` names the fields."),
    401: (
        "not_authenticated",
        "Credentials missing or invalid (`authentication_failed`, `invalid_credentials`).",
    ),
    402: ("payment_failed", "The payment was declined."),
    403: ("permission_denied", "Not allowed for this user."),
    404: ("not_found", "No such object, or not yours."),
    409: (
        "sold_out",
        "Refused in the current state: `sold_out`, `limit_reached`, `drop_not_live`, "
        "`too_many_holds`, `hold_expired`, `reservation_not_held`, `stream_not_live`, ...",
    ),
    422: ("idempotency_key_reused", "This Idempotency-Key was used with another request."),
    429: ("throttled", "Too many requests; `retry_after` says when to retry."),
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    responses = {}
    for status in statuses:
        code, meaning = ERROR_MEANINGS[status]
        body = ValidationErrorSerializer if status == 400 else ErrorSerializer
        responses[status] = OpenApiResponse(body, description=f"`{code}`: {meaning}")
    return responses
