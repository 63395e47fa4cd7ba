"""The API's JSON parser: DRF's, refusing what a client can send to make the server fail
later (a 500 instead of a 400): nesting deep enough to exhaust the interpreter's stack,
strings no UTF-8 database column can store. (A number too big for a float, 1e400, is
read as infinity, which every numeric field refuses by name.)"""

from __future__ import annotations

import codecs
import json

from rest_framework import parsers
from rest_framework.exceptions import ParseError

# No request body of this API nests more than a few levels; the fingerprint of an
# idempotent request and the error renderer walk the data recursively too.
MAX_DEPTH = 32


def refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _check(data) -> None:
    """Walk the parsed value without recursion: its depth and every string in it."""
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            _check_text(value)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                pending.append((item, depth + 1))
        else:
            pending.extend((item, depth + 1) for item in value)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (\ud800) decodes but never encodes
        raise ParseError("JSON parse error - a string holds an unpaired surrogate.") from exc


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = parsers.get_encoding(parser_context or {})
        try:
            data = json.load(
                codecs.getreader(encoding)(stream),
                parse_constant=refuse_constant,
            )
        except RecursionError as exc:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.") from exc
        except ValueError as exc:  # malformed JSON, invalid text in the charset, huge ints
            raise ParseError(f"JSON parse error - {exc}") from exc
        _check(data)
        return data
