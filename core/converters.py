"""Path converters. ``<id:...>`` matches the ids the database can hold (bigint), so an
absurd number in a URL is a plain 404 instead of a database overflow."""


class IdConverter:
    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)
