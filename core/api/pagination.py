"""Limit/offset pagination that refuses malformed parameters instead of ignoring them."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

# Far beyond any real list; keeps OFFSET inside what the database accepts.
MAX_OFFSET = 10**9


class StrictLimitOffsetPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 200

    def _strict(self, request, name: str, *, minimum: int, maximum: int) -> None:
        values = request.query_params.getlist(name)
        if not values:
            return
        value = values[-1]
        if (
            len(values) > 1
            or not value.isascii()
            or not value.isdigit()
            or not minimum <= int(value) <= maximum
        ):
            raise ValidationError({name: [f"A single whole number from {minimum} to {maximum}."]})

    def paginate_queryset(self, queryset, request, view=None):
        self._strict(request, self.limit_query_param, minimum=1, maximum=self.max_limit)
        self._strict(request, self.offset_query_param, minimum=0, maximum=MAX_OFFSET)
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            minimum = 1 if parameter["name"] == self.limit_query_param else 0
            parameter["schema"]["minimum"] = minimum
            is_limit = parameter["name"] == self.limit_query_param
            parameter["schema"]["maximum"] = self.max_limit if is_limit else MAX_OFFSET
        return parameters
