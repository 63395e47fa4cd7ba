"""An event's number read from its text: the publisher's own layout without parsing,
anything else by parsing, and nothing where there is no number."""

import pytest

from livestream.topics import seq_of


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
