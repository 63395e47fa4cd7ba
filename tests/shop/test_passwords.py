"""Password hashing off the database connection, a bounded number at a time, with the
production hasher (Argon2id) where the test is about it (the test settings use MD5)."""

import os
import threading
import time
from pathlib import Path

import pytest
from django.conf import global_settings
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import (
    Argon2PasswordHasher,
    PBKDF2PasswordHasher,
    check_password,
    make_password,
)
from django.db import connection, transaction

from config.settings import base as production_settings
from shop import passwords
from tests.factories import UserFactory

PASSWORD = "correct-horse-battery"
# The prefix of every hash the production settings make: Argon2id, 64 MiB, 3 passes, 1 lane.
PRODUCTION_PREFIX = "argon2$argon2id$v=19$m=65536,t=3,p=1$"


@pytest.fixture
def production_hashers(settings):
    settings.PASSWORD_HASHERS = production_settings.PASSWORD_HASHERS


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


def test_production_hashes_with_argon2id_and_still_knows_every_django_hasher():
    hashers = production_settings.PASSWORD_HASHERS

    assert hashers[0] == "shop.passwords.Argon2idPasswordHasher"
    # Django's whole default list after it, PBKDF2 first: no existing hash stops verifying.
    assert hashers[1:] == global_settings.PASSWORD_HASHERS


def test_a_production_hash_is_argon2id_at_the_chosen_cost(production_hashers):
    encoded = make_password(PASSWORD)

    assert encoded.startswith(PRODUCTION_PREFIX)
    summary = passwords.Argon2idPasswordHasher().decode(encoded)
    assert (summary["variety"], summary["memory_cost"], summary["time_cost"]) == (
        "argon2id",
        64 * 1024,
        3,
    )
    assert summary["parallelism"] == 1
    assert check_password(PASSWORD, encoded)
    assert not check_password("wrong", encoded)


def test_hashing_memory_is_bounded_by_the_slots_and_given_back(settings, fresh_slots):
    # Two slots, 8 sign-ins each in a thread of its own, as the server runs them: at
    # most 2 x 64 MiB at once, and none of it kept afterwards (a hash under glibc's
    # 32 MiB mmap ceiling would leave blocks in per-thread arenas).
    settings.PASSWORD_HASH_CONCURRENCY = 2
    hasher = passwords.Argon2idPasswordHasher()
    hasher.encode(PASSWORD, hasher.salt())  # the library loaded
    mib = 1024 * 1024

    def resident() -> tuple[int, int]:
        lines = Path("/proc/self/status").read_text().splitlines()
        status = dict(line.split(":", 1) for line in lines)
        return int(status["VmRSS"].split()[0]) * 1024, int(status["VmHWM"].split()[0]) * 1024

    def sign_in():
        with passwords.hashing_slot():
            hasher.encode(PASSWORD, hasher.salt())

    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # the peak (VmHWM) starts again from now
    before, _ = resident()
    threads = [threading.Thread(target=sign_in) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    after, peak = resident()

    assert 64 * mib <= peak - before < 2 * 64 * mib + 16 * mib
    assert after - before < 16 * mib


@pytest.mark.django_db
def test_a_sign_in_upgrades_a_pbkdf2_hash_to_argon2id(production_hashers):
    user = UserFactory(username="ada")
    hasher = PBKDF2PasswordHasher()  # Django's default, 1,000,000 iterations
    old = hasher.encode(PASSWORD, hasher.salt())
    assert old.startswith("pbkdf2_sha256$1000000$")
    user.password = old
    user.save(update_fields=["password"])

    assert authenticate(username="ada", password=PASSWORD).pk == user.pk

    user.refresh_from_db()
    assert user.password.startswith(PRODUCTION_PREFIX)
    assert user.check_password(PASSWORD)
    # Signed in again: nothing more to upgrade.
    upgraded = user.password
    assert authenticate(username="ada", password=PASSWORD).pk == user.pk
    user.refresh_from_db()
    assert user.password == upgraded


@pytest.mark.django_db
def test_a_sign_in_upgrades_an_argon2_hash_of_other_parameters(production_hashers):
    user = UserFactory(username="ada")
    hasher = Argon2PasswordHasher()  # Django's own: m=100 MiB, t=2, p=8
    user.password = hasher.encode(PASSWORD, hasher.salt())
    user.save(update_fields=["password"])

    assert authenticate(username="ada", password=PASSWORD).pk == user.pk

    user.refresh_from_db()
    assert user.password.startswith(PRODUCTION_PREFIX)


@pytest.mark.django_db
def test_a_wrong_password_is_refused_and_upgrades_nothing(production_hashers):
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
