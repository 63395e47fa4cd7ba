"""Where live events travel in Redis, and how they are numbered: the pub/sub channel of
each stream and of each user, each stream's event counter and where an event's number
stands in its text. The publisher (``livestream.broadcast``) and the subscribers (each
process's ``livestream.hub`` and its viewers) take them from here."""

from __future__ import annotations

import contextlib
import json

from core.redis import redis_database

# Keys live in the database ``REDIS_URL`` selects, but pub/sub channels are shared by
# every database of a server: the channels carry the database's number, so that two
# deployments (or test runs) on one Redis server, each in its own database, never hear
# each other's events.


def stream_channel(stream_id: int) -> str:
    return f"db{redis_database()}:stream:{stream_id}:events"


def user_channel(user_id: int) -> str:
    return f"db{redis_database()}:user:{user_id}:events"


def seq_key(stream_id: int) -> str:
    """The counter that numbers the stream's events (``seq``)."""
    return f"stream:{stream_id}:seq"


_SEQ_FIRST = '{"seq":'


def seq_of(text: str) -> int | None:
    """The ``seq`` of an event text; None for texts without one. ``broadcast.publish``
    writes it first, so the fan-out path reads it without parsing the JSON; any other
    text is parsed."""
    if text.startswith(_SEQ_FIRST):
        end = text.find(",", len(_SEQ_FIRST))
        with contextlib.suppress(ValueError):
            return int(text[len(_SEQ_FIRST) : end])
    try:
        seq = json.loads(text).get("seq")
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


# Published on a user's channel when they log out: the hub closes their sockets. Never
# sent to a client.
USER_LOGGED_OUT = '{"type":"user.logged_out"}'
