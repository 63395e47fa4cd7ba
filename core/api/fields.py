"""Strict input fields: JSON numbers, booleans and strings only, no coercion between them."""

from __future__ import annotations

import re
from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


class StrictIntegerField(serializers.IntegerField):
    """An integer that must arrive as a JSON integer: ``"1"``, ``1.0``, ``true``,
    ``1e309`` and friends are refused instead of being coerced."""

    default_error_messages = {"invalid": "A whole number (JSON integer) is required."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON ``true`` or ``false`` only: DRF's would take ``0``, ``"yes"`` or ``"on"``."""

    default_error_messages = {"invalid": "true or false (a JSON boolean) is required."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class _StringsOnly:
    """JSON strings only: DRF's text fields would turn ``0`` or ``true`` into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(_StringsOnly, serializers.CharField):
    default_error_messages = {"invalid": "A string is required."}


class StrictRegexField(_StringsOnly, serializers.RegexField):
    default_error_messages = {"invalid": "A string matching the pattern is required."}


MONEY_PATTERN = r"^[0-9]{1,10}(\.[0-9]{1,2})?$"


@extend_schema_field({"type": "string", "pattern": MONEY_PATTERN, "example": "19.99"})
class MoneyField(serializers.Field):
    """A non-negative amount as a decimal string (``"19.99"``): JSON numbers are refused,
    since binary floats cannot carry cents exactly."""

    default_error_messages = {
        "invalid": 'An amount as a string of digits with at most 2 decimals, e.g. "19.99".'
    }
    _pattern = re.compile(MONEY_PATTERN)

    def to_internal_value(self, data) -> Decimal:
        if not isinstance(data, str) or not self._pattern.match(data):
            self.fail("invalid")
        return Decimal(data)

    def to_representation(self, value) -> str:
        return f"{value:.2f}"
