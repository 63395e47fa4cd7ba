"""The entry rules a host sets per drop, checked before an entry is decided: a minimum
account age, a challenge behind a provider (``draws.challenge``) and, decided with the
entry itself (in Redis's script, or by the database's batch), a cap of entries per
client address. A refusal is ``NotEligible`` with a ``reason`` naming the rule."""

from __future__ import annotations

from typing import Protocol

from django.contrib.auth import get_user_model
from django.utils import timezone

from draws.challenge import get_challenge_provider
from draws.exceptions import NotEligible

ACCOUNT_TOO_NEW = "account_too_new"
CHALLENGE_REQUIRED = "challenge_required"
CHALLENGE_FAILED = "challenge_failed"
ADDRESS_CAP = "address_cap"


class Rules(Protocol):
    min_account_age_seconds: int | None
    max_entries_per_address: int | None
    challenge_required: bool


def entry_check(
    *, rules: Rules, customer_id: int, client_address: str, challenge_token: str | None
) -> None:
    """Raise ``NotEligible`` for the first rule the entry fails (cheapest first); the
    challenge provider's own failure (``ChallengeUnavailable``) passes through."""
    if rules.min_account_age_seconds is not None:
        joined = (
            get_user_model()
            .objects.filter(pk=customer_id)
            .values_list("date_joined", flat=True)
            .first()
        )
        age = (timezone.now() - joined).total_seconds() if joined else 0
        if age < rules.min_account_age_seconds:
            raise NotEligible(
                "Your account is too new to enter this draw.",
                reason=ACCOUNT_TOO_NEW,
                min_account_age_seconds=rules.min_account_age_seconds,
            )
    if rules.challenge_required:
        if not challenge_token:
            raise NotEligible(
                "This draw asks for the entry check: send challenge_token.",
                reason=CHALLENGE_REQUIRED,
            )
        verdict = get_challenge_provider().verify(
            token=challenge_token, customer_id=customer_id, client_address=client_address
        )
        if not verdict.passed:
            raise NotEligible(
                verdict.detail or "The entry check was not passed.", reason=CHALLENGE_FAILED
            )
