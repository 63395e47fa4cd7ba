"""The entry challenge (a human check) behind a provider interface, like payments: the
provider named by ``settings.DRAW_CHALLENGE_PROVIDER`` (a dotted path to a class); the
default is the network-free ``TestChallengeProvider``. A real one (a CAPTCHA service)
plugs in by that setting, verifying the token the client got from it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from core.exceptions import DomainError

DEFAULT_PROVIDER = "draws.challenge.TestChallengeProvider"


class ChallengeUnavailable(DomainError):
    """The provider could not give a verdict (down, timed out): not the viewer's fault,
    and the same entry may well pass when sent again."""

    code = "challenge_unavailable"
    http_status = 503
    retryable = True
    default_detail = "The entry check is unavailable; try again shortly."


@dataclass(frozen=True)
class ChallengeVerdict:
    passed: bool
    detail: str = ""


class ChallengeProvider(Protocol):
    name: str

    def verify(self, *, token: str, customer_id: int, client_address: str) -> ChallengeVerdict:
        """The verdict on a token the client got from the provider; raises
        ``ChallengeUnavailable`` when there is none to give."""


class TestChallengeProvider:
    """No network: the token ``"pass"`` passes, ``"unavailable"`` stands for a provider
    that does not answer, anything else fails."""

    name = "test"
    PASS, UNAVAILABLE = "pass", "unavailable"

    def verify(self, *, token: str, customer_id: int, client_address: str) -> ChallengeVerdict:
        if token == self.UNAVAILABLE:
            raise ChallengeUnavailable()
        if token == self.PASS:
            return ChallengeVerdict(passed=True)
        return ChallengeVerdict(passed=False, detail="The check was not passed.")


@lru_cache(maxsize=8)
def _provider_class(path: str) -> type:
    return import_string(path)


def get_challenge_provider() -> ChallengeProvider:
    path = getattr(settings, "DRAW_CHALLENGE_PROVIDER", DEFAULT_PROVIDER) or DEFAULT_PROVIDER
    return _provider_class(path)()
