"""Accounts: sign-up."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from shop.passwords import hashing_slot


class UsernameTaken(Exception):
    """The name was registered by someone else first (the checks raced)."""


def account_register(*, username: str, password: str) -> Token:
    """Create the user and its API token, both or neither.

    The password is hashed before the transaction, with no database connection held
    (``hashing_slot``): the writes then hold a connection for milliseconds, not for the
    hash, so a sign-up surge waits for CPU, never for the pool.
    """
    User = get_user_model()
    user = User(username=User.normalize_username(username))
    with hashing_slot():
        user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
            return Token.objects.create(user=user)
    except IntegrityError as exc:
        raise UsernameTaken(username) from exc
