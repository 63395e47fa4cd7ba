"""The draw rule of the public contract, and nothing else: what anyone can recompute
from the revealed seed and the entries.

``seed_commitment`` is the lowercase hex SHA-256 of the seed (a string, UTF-8). Entries
are drawn in increasing order of the lowercase hex HMAC-SHA256 with the seed as key and
the entry id in decimal as message; each gets its quantity while units remain, and an
entry that no longer fits is skipped (those after it are still tried): that part is
``inventory.services.awards``', which hands out the units under the allocation's lock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

# 32 random bytes: as strong as the SHA-256 that commits to them.
SEED_BYTES = 32


def new_seed() -> str:
    return secrets.token_hex(SEED_BYTES)


def seed_commitment(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def draw_key(seed: str, entry_id: int) -> str:
    return hmac.new(seed.encode(), str(entry_id).encode(), hashlib.sha256).hexdigest()


def draw_order(seed: str, entry_ids: Iterable[int]) -> list[int]:
    """Entry ids in the order the draw takes them. Two ids sharing a key would take a
    SHA-256 collision; the id breaks such a tie all the same, so the order is total."""
    return sorted(entry_ids, key=lambda entry_id: (draw_key(seed, entry_id), entry_id))
