"""Password hashing that holds no database connection, a few hashes at a time.

A password hash is deliberately slow: PBKDF2-SHA256 at Django's 1,000,000 iterations
costs about 0.55 s of one core here. Under ASGI every request to a sync view runs in a
thread of its own (Django gives each request its own ``ThreadSensitiveContext``, hence
its own single-thread executor, with no bound on how many run at once), and Django
opened the request's pooled connection at its first query and keeps it until the
response. So a sign-up or sign-in held one of the process's ``DB_POOL_MAX_SIZE``
(8) connections through its hash, a surge of them queued on the pool for longer than
``DB_POOL_TIMEOUT`` and the rest were answered 503, purchases included.

Two rules fix it:

* the connection goes back to the pool before hashing (``connection.close()`` returns a
  pooled connection; the next query takes one again), so a hash never holds one;
* at most ``PASSWORD_HASH_CONCURRENCY`` hashes run at once per process (one per core
  by default). Hashing is CPU-bound: more at once finishes none sooner, makes every
  one slower (120 at once would all end after the whole surge's CPU time), and leaves
  no core for the event loop serving websockets and purchases. The rest wait their
  turn, holding nothing but a thread, and are served in order of arrival.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.hashers import verify_password
from django.db import connection

_slots: threading.Semaphore | None = None
_slots_lock = threading.Lock()


def default_hash_concurrency() -> int:
    """The cores this process may run on (a container's CPU set, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _hash_slots() -> threading.Semaphore:
    global _slots
    with _slots_lock:
        if _slots is None:
            size = settings.PASSWORD_HASH_CONCURRENCY or default_hash_concurrency()
            _slots = threading.BoundedSemaphore(size)
        return _slots


@contextmanager
def hashing_slot() -> Iterator[None]:
    """Run the block (one password hash, no database work) with no database
    connection held, once a hashing slot is free.

    Inside a transaction the connection cannot be given back; the hash then holds it,
    as it would anyway. Such callers (admin forms) are rare and not surges.
    """
    if not connection.in_atomic_block:
        # Before waiting for a slot: a request must never hold a connection while it
        # queues, or a surge would hold the whole pool waiting on the CPU.
        connection.close()
    with _hash_slots():
        yield


class PasswordBackend(ModelBackend):
    """Django's ``ModelBackend`` with the hash moved off the database connection: read
    the user, give the connection back, verify the password in a hashing slot, then
    write (a hash upgraded to today's work factor) on a connection taken again."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        User = get_user_model()
        if username is None:
            username = kwargs.get(User.USERNAME_FIELD)
        if username is None or password is None:
            return None
        try:
            user = User._default_manager.get_by_natural_key(username)
        except User.DoesNotExist:
            # Hash anyway, so an unknown name takes as long as a wrong password (#20760).
            with hashing_slot():
                User().set_password(password)
            return None
        with hashing_slot():
            correct, must_update = verify_password(password, user.password)
            if correct and must_update:
                user.set_password(password)  # the new hash, saved below
        if not correct:
            return None
        if must_update:
            user._password = None  # an upgraded hash is not a password change
            user.save(update_fields=["password"])
        return user if self.user_can_authenticate(user) else None
