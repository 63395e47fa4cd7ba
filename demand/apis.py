"""HTTP interface of the readiness report (before a stream) and the demand report (after
it): thin views over ``demand.readers`` and ``demand.report``, for the stream's host or
staff. Their paths sit under the stream's (``/api/streams/<slug>/...``)."""

from __future__ import annotations

import csv
import io
from datetime import datetime

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.schema import error_responses
from demand import readers, report
from livestream import selectors
from livestream.services import stream_check_control

# --- documented shapes -------------------------------------------------------------------

BASES = ["history", "one_drop", "default", "declared", "unknown"]


class EstimateSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True)
    low = serializers.FloatField(allow_null=True, help_text="Lower end of the interval.")
    high = serializers.FloatField(allow_null=True, help_text="Upper end of the interval.")
    basis = serializers.ChoiceField(
        BASES,
        help_text="`history`: the host's past drops; `one_drop`: a single one (wide); "
        "`default`: no history, the documented prior; `declared`: the host's figure; "
        "`unknown`: nothing to go on (value null).",
    )
    drops = serializers.IntegerField(help_text="Past drops the estimate rests on.")


class DropReadinessSerializer(serializers.Serializer):
    drop = serializers.IntegerField()
    sku = serializers.CharField()
    product = serializers.CharField()
    status = serializers.CharField(help_text="The drop's sale: `ready` or `open`.")
    quantity = serializers.IntegerField()
    per_viewer_limit = serializers.IntegerField(allow_null=True)
    stock_on_hand = serializers.IntegerField()
    stock_free = serializers.IntegerField(help_text="On hand and in no allocation.")
    units_per_buyer = serializers.FloatField()
    expected_demand = EstimateSerializer(help_text="Units wanted.")
    verdict = serializers.ChoiceField(["short", "at_risk", "enough", "unknown"])
    message = serializers.CharField()
    cover = serializers.CharField(help_text="What would cover a shortfall (or empty).")
    shortfall = serializers.IntegerField(allow_null=True)
    shortfall_low = serializers.IntegerField(allow_null=True)
    shortfall_high = serializers.IntegerField(allow_null=True)
    sell_out_seconds = serializers.IntegerField(
        allow_null=True, help_text="Expected time from pin to sold out (null: not expected)."
    )
    problems = serializers.ListField(
        child=serializers.ChoiceField(
            ["demand_exceeds_drop", "demand_exceeds_stock", "quantity_exceeds_on_hand"]
        )
    )


class StreamReadinessSerializer(serializers.Serializer):
    stream = serializers.IntegerField()
    slug = serializers.CharField()
    title = serializers.CharField()
    status = serializers.CharField()
    scheduled_start = serializers.DateTimeField(allow_null=True)
    confidence = serializers.FloatField(help_text="Of every interval in the report.")
    expected_viewers = EstimateSerializer()
    rate = EstimateSerializer(help_text="Demand per viewer at pin.")
    decay_seconds = EstimateSerializer(help_text="How fast demand fades after a pin.")
    drops = DropReadinessSerializer(many=True, help_text="Drops not yet closed.")


class DemandRowSerializer(serializers.Serializer):
    drop = serializers.IntegerField()
    sku = serializers.CharField()
    product = serializers.CharField()
    measured = serializers.BooleanField(help_text="False: no demand figures flushed yet.")
    final = serializers.BooleanField(help_text="Flushed after the drop closed.")
    supply = serializers.IntegerField()
    sold = serializers.IntegerField()
    held = serializers.IntegerField()
    unmet_demand = serializers.IntegerField(allow_null=True)
    total_demand = serializers.IntegerField(allow_null=True)
    buyers = serializers.IntegerField(allow_null=True)
    viewers_turned_away = serializers.IntegerField(allow_null=True)
    waitlist_joined = serializers.IntegerField(allow_null=True)
    waitlist_only = serializers.IntegerField(allow_null=True)
    waitlist_waiting = serializers.IntegerField(allow_null=True)
    entries = serializers.IntegerField(
        allow_null=True, help_text="A drop sold by draw: viewers who entered."
    )
    entry_winners = serializers.IntegerField(
        allow_null=True, help_text="A drop sold by draw: entrants the draw chose."
    )
    entries_refused = serializers.IntegerField(
        allow_null=True, help_text="A drop sold by draw: entries refused (closed, or a rule)."
    )
    attempts = serializers.IntegerField(allow_null=True)
    viewers_tried = serializers.IntegerField(allow_null=True)
    turned_away_sold_out = serializers.IntegerField(allow_null=True)
    turned_away_limit = serializers.IntegerField(allow_null=True)
    viewers_at_pin = serializers.IntegerField(allow_null=True)
    peak_viewers = serializers.IntegerField(allow_null=True)
    demand_per_viewer = serializers.FloatField(allow_null=True)
    seconds_to_sell_out = serializers.FloatField(allow_null=True)
    pinned_at = serializers.DateTimeField(allow_null=True)
    opened_at = serializers.DateTimeField(allow_null=True)
    sold_out_at = serializers.DateTimeField(allow_null=True)
    closed_at = serializers.DateTimeField(allow_null=True)


class DemandReportSerializer(serializers.Serializer):
    stream = serializers.IntegerField()
    slug = serializers.CharField()
    title = serializers.CharField()
    status = serializers.CharField()
    drops = DemandRowSerializer(many=True)


# --- CSV ---------------------------------------------------------------------------------


class DemandCsvRenderer(BaseRenderer):
    """The demand report's drops as CSV, one row per drop."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(report.DEMAND_REPORT_COLUMNS)
        for row in data.get("drops", []):
            writer.writerow(_csv_cell(row[c]) for c in report.DEMAND_REPORT_COLUMNS)
        return out.getvalue().encode(self.charset)


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --- views -------------------------------------------------------------------------------


def _controlled_stream(request: Request, slug: str):
    stream = selectors.stream_get(slug=slug)
    stream_check_control(stream=stream, user=request.user)
    return stream


class StreamReadinessApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="streams_readiness",
        responses={200: StreamReadinessSerializer, **error_responses(401, 403, 404)},
        summary="Will the stock last? Expected demand per planned drop (the host or staff)",
        description="Per drop not yet closed: expected demand (expected viewers x the "
        "host's demand per viewer from past drops, unmet demand included) with a 90 % "
        "interval, compared with the drop's quantity and the variant's stock: `short` "
        "(likely to sell out in about `sell_out_seconds`, short by about `shortfall` "
        "units, and what would cover it), `at_risk`, `enough` or `unknown`. Method and "
        "limits: docs/demand.md.",
    )
    def get(self, request: Request, slug: str) -> Response:
        stream = _controlled_stream(request, slug)
        return Response(readers.stream_readiness(stream=stream).as_dict())


class StreamDemandApi(APIView):
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer, DemandCsvRenderer]

    @extend_schema(
        operation_id="streams_demand",
        parameters=[
            OpenApiParameter(
                "format",
                str,
                OpenApiParameter.QUERY,
                enum=["json", "csv"],
                description="`csv` for a spreadsheet (or send `Accept: text/csv`).",
            )
        ],
        responses={
            (200, "application/json"): DemandReportSerializer,
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="One row a drop."),
            # Errors are JSON whatever the format (see handle_exception).
            **{
                (status, "application/json"): response
                for status, response in error_responses(400, 401, 403, 404).items()
            },
        },
        summary="What demand each drop met: supply, sold, unmet demand, time to sell out "
        "(the host or staff)",
    )
    def get(self, request: Request, slug: str) -> Response:
        stream = _controlled_stream(request, slug)
        body = {
            "stream": stream.pk,
            "slug": stream.slug,
            "title": stream.title,
            "status": stream.status,
            "drops": report.stream_demand_report(stream=stream),
        }
        response = Response(body)
        if request.accepted_renderer.format == "csv":
            response["Content-Disposition"] = f'attachment; filename="{stream.slug}-demand.csv"'
        return response

    def initial(self, request: Request, *args, **kwargs) -> None:
        # DRF ignores an empty ``format`` and answers an unknown one 404: both are
        # bad input here.
        requested = request.query_params.get("format")
        if requested is not None and requested not in ("json", "csv"):
            raise ValidationError({"format": ["Use json or csv."]})
        super().initial(request, *args, **kwargs)

    def handle_exception(self, exc):
        # Errors keep the one JSON error shape whatever format was asked for.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)
