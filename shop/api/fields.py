"""Strict input fields: JSON numbers only, no coercion from strings, bools or floats."""

from __future__ import annotations

from rest_framework import serializers


class StrictIntegerField(serializers.IntegerField):
    """An integer that must arrive as a JSON integer: ``"1"``, ``1.0``, ``true``,
    ``1e309`` and friends are refused instead of being coerced."""

    default_error_messages = {"invalid": "A whole number (JSON integer) is required."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)
