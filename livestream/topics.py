"""Where live events travel in Redis: the pub/sub channel of each stream and of each
user, and each stream's event counter. The publisher (``livestream.broadcast``) and the
subscribers (each process's ``livestream.hub``) name them from here."""

from __future__ import annotations


def stream_channel(stream_id: int) -> str:
    return f"stream:{stream_id}:events"


def user_channel(user_id: int) -> str:
    return f"user:{user_id}:events"


def seq_key(stream_id: int) -> str:
    """The counter that numbers the stream's events (``seq``)."""
    return f"stream:{stream_id}:seq"


# Published on a user's channel when they log out: the hub closes their sockets. Never
# sent to a client.
USER_LOGGED_OUT = '{"type":"user.logged_out"}'
