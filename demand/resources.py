"""CSV export of the per-drop demand report (django-import-export, export only).

The columns are those of the demand report API (``report.DEMAND_REPORT_COLUMNS``)
plus the stream, so a spreadsheet of many streams' drops reads on its own.
"""

from __future__ import annotations

from import_export import fields, resources

from demand import report
from demand.models import DropDemand


def _column(name: str) -> fields.Field:
    return fields.Field(column_name=name, readonly=True)


class DropDemandResource(resources.ModelResource):
    # Columns that are not model fields (computed by the report).
    stream = _column("stream")
    sku = _column("sku")
    product = _column("product")
    measured = _column("measured")
    unmet_demand = _column("unmet_demand")
    total_demand = _column("total_demand")
    demand_per_viewer = _column("demand_per_viewer")
    seconds_to_sell_out = _column("seconds_to_sell_out")

    class Meta:
        model = DropDemand
        name = "Demand per drop"
        fields = ("stream", *report.DEMAND_REPORT_COLUMNS)
        export_order = fields

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._rows: dict[int, dict] = {}

    def get_queryset(self):
        return DropDemand.objects.select_related("drop__stream", "drop__variant__product")

    def export_field(self, field, instance, **kwargs):
        # Every column but the stream comes from the report's own row, so the admin's
        # CSV and the API's CSV cannot disagree.
        if field.column_name == "stream":
            return instance.drop.stream.slug
        row = self._rows.get(instance.pk)
        if row is None:
            row = self._rows[instance.pk] = report.demand_row(drop=instance.drop, demand=instance)
        value = row.get(field.column_name)
        return "" if value is None else value
