"""Password hashing that holds no database connection, a few hashes at a time.

A password hash is deliberately slow: Argon2id as configured here
(``Argon2idPasswordHasher``, below: 64 MiB, 3 passes) costs about 0.23 s of one core and
64 MiB; hashes made before it, PBKDF2-SHA256 at Django's 1,000,000 iterations, about
0.5 s of a core to verify. Under ASGI every request to a sync view runs in a
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
  turn, holding nothing but a thread, and are served in order of arrival. The slots
  also bound the memory: ``PASSWORD_HASH_CONCURRENCY`` x 64 MiB at most per process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.hashers import Argon2PasswordHasher, verify_password
from django.db import connection


class Argon2idPasswordHasher(Argon2PasswordHasher):
    """Argon2id (argon2-cffi) at t=3 passes over m=64 MiB: RFC 9106's second recommended
    option (the first takes 2 GiB), argon2-cffi's own default (``RFC_9106_LOW_MEMORY``),
    with one lane instead of four.

    Measured on the 2-core development machine: one hash, median of 5 to 10 runs in
    fresh processes; CPU time equals wall time unless said; memory is the peak RSS
    growth; "two at once" is two threads hashing together, as two slots run them.

    ==========================================  =============  =======  ===============
    hasher                                      ms a hash      memory   two at once
    ==========================================  =============  =======  ===============
    PBKDF2-SHA256 1,000,000 (Django's default)  535            0        3.5/s
    Argon2id m=100 MiB t=2 p=8 (Django's)       166, CPU 286   100 MiB  6.8/s, 200 MiB
    Argon2id m=19 MiB t=2 p=1 (OWASP minimum)   29             19 MiB   54/s, 38 MiB
    Argon2id m=46 MiB t=1 p=1 (OWASP, equal)    64             46 MiB   27/s, 92 MiB
    Argon2id m=64 MiB t=3 p=1 (this one)        228            64 MiB   7.6/s, 128 MiB
    ==========================================  =============  =======  ===============

    Why this one: it is memory-hard, which PBKDF2 is not (GPUs and ASICs guess PBKDF2
    cheaply); an offline guess costs about five times OWASP's minimum in memory x
    passes (64 MiB x 3 against 19 MiB x 2); and a sign-in still costs less than half the CPU that
    PBKDF2 did, so a sign-in surge is served twice as fast. ``p=1``: the hashing slots
    already run one hash per core; more lanes only add threads per hash (Django's p=8
    ran 16 threads on 2 cores under two slots, 286 ms of CPU for 166 ms of wall) and
    change nothing of an attacker's work.

    Memory: 64 MiB a hash x ``PASSWORD_HASH_CONCURRENCY`` (one slot per core by
    default) is the most hashing takes at once: 128 MiB per process here, 64 MiB per
    core elsewhere (several server processes on one machine each have their own
    slots). It goes back to the system after each hash: above glibc's 32 MiB mmap
    ceiling, each hash gets a mapping of its own, unmapped when it is done (measured:
    back to the baseline after 64 sign-ins, 128 MiB at the peak). Below that ceiling
    (OWASP's 19 MiB) glibc keeps freed blocks in per-thread arenas: the same 64
    sign-ins left the process 300 MiB larger for good. So keep ``m`` above 32 MiB.

    Hashes made with other parameters, or with PBKDF2, still verify, and are rehashed
    with these at the user's next sign-in (``verify_password``'s ``must_update``).
    """

    time_cost = 3
    memory_cost = 64 * 1024  # KiB
    parallelism = 1


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
