"""Password hashing off the database connection, a bounded number at a time."""

import os
import threading
import time

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection, transaction

from shop import passwords
from tests.factories import UserFactory

PASSWORD = "correct-horse-battery"


@pytest.fixture
def fresh_slots(monkeypatch):
    """Slots sized from the settings of this test."""
    monkeypatch.setattr(passwords, "_slots", None)


@pytest.mark.django_db(transaction=True)
def test_a_hash_holds_no_database_connection(fresh_slots):
    UserFactory(username="ada")
    assert connection.connection is not None  # the request's connection, in use

    with passwords.hashing_slot():
        held_while_hashing = connection.connection

    assert held_while_hashing is None
    # The next query simply takes a connection again.
    assert authenticate(username="ada", password=PASSWORD).username == "ada"


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_connection_is_kept(fresh_slots):
    with transaction.atomic():
        UserFactory(username="ada")
        with passwords.hashing_slot():
            held_while_hashing = connection.connection

    assert held_while_hashing is not None
    assert connection.in_atomic_block is False


def test_no_more_hashes_run_at_once_than_configured(settings, fresh_slots):
    settings.PASSWORD_HASH_CONCURRENCY = 2
    inside, most, lock = 0, 0, threading.Lock()

    def hash_once():
        nonlocal inside, most
        with passwords.hashing_slot():
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=hash_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert (most, inside) == (2, 0)


def test_by_default_one_hash_per_core(settings, fresh_slots):
    settings.PASSWORD_HASH_CONCURRENCY = 0

    assert passwords._hash_slots()._initial_value == len(os.sched_getaffinity(0))


@pytest.mark.django_db
def test_a_sign_in_upgrades_an_outdated_hash(settings):
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]
    user = UserFactory(username="ada")
    old = PBKDF2PasswordHasher().encode(PASSWORD, "somesalt", iterations=1)
    user.password = old
    user.save(update_fields=["password"])

    assert authenticate(username="ada", password=PASSWORD).pk == user.pk

    user.refresh_from_db()
    assert user.password.startswith("md5$")
    assert user.check_password(PASSWORD)


@pytest.mark.django_db
def test_a_wrong_password_is_refused_and_upgrades_nothing(settings):
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]
    user = UserFactory(username="ada")
    old = PBKDF2PasswordHasher().encode(PASSWORD, "somesalt", iterations=1)
    user.password = old
    user.save(update_fields=["password"])

    assert authenticate(username="ada", password="wrong") is None
    assert authenticate(username="nobody", password=PASSWORD) is None

    user.refresh_from_db()
    assert user.password == old


@pytest.mark.django_db
def test_an_inactive_user_does_not_sign_in():
    UserFactory(username="ada", is_active=False)

    assert authenticate(username="ada", password=PASSWORD) is None
