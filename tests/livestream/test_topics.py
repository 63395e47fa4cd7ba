"""The names live events travel by: channels within their Redis database, and an
event's number read from its text (the publisher's own layout without parsing,
anything else by parsing, and nothing where there is no number)."""

import pytest

from livestream.topics import seq_of, stream_channel, user_channel


@pytest.mark.parametrize(
    ("text", "seq"),
    [
        ('{"seq":42,"type":"stock.changed","drop":1}', 42),  # as broadcast.publish writes
        ('{"type":"stream.state","seq":7}', 7),  # a snapshot: seq elsewhere
        ('{"type":"resync.required"}', None),
        ('{"seq":"7","type":"x"}', None),  # not a number
        ('{"seq":true}', None),
        ("[1, 2]", None),
        ("not json", None),
    ],
)
def test_seq_of(text, seq):
    assert seq_of(text) == seq


def test_channels_are_named_within_the_redis_database_so_two_databases_never_cross(settings):
    settings.REDIS_URL = "redis://127.0.0.1:6379/3"
    in_three = (stream_channel(5), user_channel(5))
    settings.REDIS_URL = "redis://127.0.0.1:6379/4"
    in_four = (stream_channel(5), user_channel(5))
    settings.REDIS_URL = "redis://127.0.0.1:6379"

    assert in_three == ("db3:stream:5:events", "db3:user:5:events")
    assert in_four == ("db4:stream:5:events", "db4:user:5:events")
    assert (stream_channel(5), user_channel(5)) == ("db0:stream:5:events", "db0:user:5:events")
