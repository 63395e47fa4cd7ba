"""HTTP interface of streams, drops and holds: thin views over the services."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.idempotency import HEADER, KEY_PATTERN, idempotency_key_of, idempotent
from core.api.schema import ErrorSerializer, error_responses
from core.api.throttles import ReserveIPThrottle, ReserveUserThrottle, client_address
from core.exceptions import NotFound
from inventory import selectors as inventory_selectors
from inventory import services as inventory_services
from livestream import selectors, services, snapshot_cache
from livestream.serializers import (
    DropCreateSerializer,
    DropSerializer,
    ReservationSerializer,
    ReserveSerializer,
    StreamCreateSerializer,
    StreamSerializer,
    StreamSnapshotSerializer,
    WaitlistEntrySerializer,
    WaitlistJoinSerializer,
)


class StreamListCreateApi(generics.ListAPIView):
    serializer_class = StreamSnapshotSerializer

    def get_permissions(self):
        return [IsAuthenticated()] if self.request.method == "POST" else [AllowAny()]

    def get_queryset(self):
        return selectors.stream_list()

    def list(self, request: Request, *args, **kwargs) -> Response:
        # The page at once (not a snapshot per stream): the same few reads for 200 streams
        # as for one (see stream_snapshots).
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(selectors.stream_snapshots(streams=page))

    @extend_schema(
        operation_id="streams_list",
        responses={200: StreamSnapshotSerializer(many=True), **error_responses(400)},
        summary="Streams, newest first",
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="streams_create",
        request=StreamCreateSerializer,
        responses={201: StreamSerializer, **error_responses(400, 401, 403, 409)},
        summary="Schedule a stream (hosts and staff)",
    )
    def post(self, request: Request) -> Response:
        data = _valid(StreamCreateSerializer, request)
        stream = services.stream_create(host=request.user, **data)
        return Response(selectors.stream_snapshot(stream=stream), status=status.HTTP_201_CREATED)


class StreamDetailApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="streams_retrieve",
        responses={200: StreamSerializer, **error_responses(404)},
        summary="A stream with its drops, live counters and sequence number",
    )
    def get(self, request: Request, slug: str) -> Response:
        stream = selectors.stream_get(slug=slug)
        snapshot = selectors.stream_snapshot(stream=stream)
        # The same bytes this answer renders to (one renderer, no parameters): the front
        # door answers the next anonymous readers with them.
        snapshot_cache.snapshot_store(
            slug=slug,
            stream_id=stream.pk,
            seq=snapshot["seq"],
            body=JSONRenderer().render(snapshot),
        )
        return Response(snapshot)


_CONTROL_RESPONSES = {200: StreamSerializer, **error_responses(401, 403, 404, 409)}


class StreamStartApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="streams_start",
        request=None,
        responses=_CONTROL_RESPONSES,
        summary="Go live (the host or staff)",
    )
    def post(self, request: Request, slug: str) -> Response:
        stream = selectors.stream_get(slug=slug)
        stream = services.stream_start(stream_id=stream.pk, actor=request.user)
        return Response(selectors.stream_snapshot(stream=stream))


class StreamEndApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="streams_end",
        request=None,
        responses=_CONTROL_RESPONSES,
        summary="End the stream; unsold units go back to stock (the host or staff)",
    )
    def post(self, request: Request, slug: str) -> Response:
        stream = selectors.stream_get(slug=slug)
        stream = services.stream_end(stream_id=stream.pk, actor=request.user)
        return Response(selectors.stream_snapshot(stream=stream))


class DropCreateApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="drops_create",
        request=DropCreateSerializer,
        responses={201: DropSerializer, **error_responses(400, 401, 403, 404, 409)},
        summary="Put a variant on stage with a quantity and a flash price (the host)",
    )
    def post(self, request: Request, slug: str) -> Response:
        stream = selectors.stream_get(slug=slug)
        data = _valid(DropCreateSerializer, request)
        drop = services.drop_create(
            stream_id=stream.pk,
            variant_id=data["variant"],
            quantity=data["quantity"],
            price=data["price"],
            per_viewer_limit=data.get("per_viewer_limit"),
            starts_at=data.get("starts_at"),
            ends_at=data.get("ends_at"),
            duration_seconds=data.get("duration_seconds"),
            mode=data["mode"],
            entry_seconds=data.get("entry_seconds"),
            actor=request.user,
        )
        return Response(selectors.drop_snapshot(drop=drop), status=status.HTTP_201_CREATED)


_DROP_CONTROL_RESPONSES = {200: DropSerializer, **error_responses(401, 403, 404, 409)}


class DropPinApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="drops_pin",
        request=None,
        responses=_DROP_CONTROL_RESPONSES,
        summary="Pin a drop: it goes on sale (the host or staff)",
    )
    def post(self, request: Request, drop_id: int) -> Response:
        drop = services.drop_pin(drop_id=drop_id, actor=request.user)
        return Response(selectors.drop_snapshot(drop=drop))


class DropUnpinApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="drops_unpin",
        request=None,
        responses=_DROP_CONTROL_RESPONSES,
        summary="Unpin a drop (the host or staff)",
    )
    def post(self, request: Request, drop_id: int) -> Response:
        drop = services.drop_unpin(drop_id=drop_id, actor=request.user)
        return Response(selectors.drop_snapshot(drop=drop))


class DropReserveApi(APIView):
    """The hot path: validate, admit at the gate, answer."""

    permission_classes = [IsAuthenticated]
    throttle_classes = [ReserveUserThrottle, ReserveIPThrottle]

    @extend_schema(
        operation_id="drops_reserve",
        parameters=[
            OpenApiParameter(
                HEADER,
                {"type": "string", "pattern": KEY_PATTERN},
                OpenApiParameter.HEADER,
                required=True,
                description="Unique per attempt; a retry with the same key and body gets "
                "the first answer again.",
            )
        ],
        request=ReserveSerializer,
        responses={
            202: ReservationSerializer,
            **error_responses(400, 401, 404, 409, 422, 429),
            503: OpenApiResponse(
                ErrorSerializer,
                description="`challenge_unavailable`: the entry check cannot be made now; "
                "send again shortly.",
            ),
        },
        summary="Reserve units of a drop (a hold); settles asynchronously",
        description="Answers `202` with the hold (`pending`, `held` or `rejected`). "
        "Refusals: `409` `sold_out`, `limit_reached`, `drop_not_live`, `too_many_holds`, "
        "`not_eligible` (with `reason`, where the drop has entry rules); `503` "
        "`challenge_unavailable` when the entry check cannot be made.",
    )
    def post(self, request: Request, drop_id: int) -> Response:
        key = idempotency_key_of(request)

        def answer() -> Response:
            data = _valid(ReserveSerializer, request)
            reservation = services.drop_reserve(
                drop_id=drop_id,
                customer_id=request.user.pk,
                quantity=data["quantity"],
                idempotency_key=key,
                client_address=client_address(request),
                challenge_token=data.get("challenge_token"),
            )
            body = ReservationSerializer(reservation, context={"drop_id": drop_id}).data
            return Response(body, status=status.HTTP_202_ACCEPTED)

        return idempotent(request, key=key, answer=answer)


class DropWaitlistApi(APIView):
    """A viewer's place in line for a sold-out drop."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="drops_waitlist_join",
        request=WaitlistJoinSerializer,
        responses={
            201: WaitlistEntrySerializer,
            200: WaitlistEntrySerializer,
            **error_responses(400, 401, 404, 409),
        },
        summary="Queue for a sold-out drop",
        description="`201` with your new entry, `200` with the one you already have. A unit "
        "that comes back goes to the first in line as a held reservation (an *offer*, "
        "`status` `offered`, with `reservation` to check out) for a short window, then to "
        "the next. Refusals: `409` `not_sold_out` (reserve instead), `drop_not_live`, "
        "`limit_reached`.",
    )
    def post(self, request: Request, drop_id: int) -> Response:
        data = _valid(WaitlistJoinSerializer, request)
        entry, created = services.drop_waitlist_join(
            drop_id=drop_id, customer_id=request.user.pk, quantity=data["quantity"]
        )
        body = WaitlistEntrySerializer(entry, context={"drop_id": drop_id}).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        operation_id="drops_waitlist_retrieve",
        responses={200: WaitlistEntrySerializer, **error_responses(401, 404)},
        summary="Your place in line for a drop (your latest entry)",
    )
    def get(self, request: Request, drop_id: int) -> Response:
        entry = services.drop_waitlist_entry(drop_id=drop_id, customer_id=request.user.pk)
        return Response(WaitlistEntrySerializer(entry, context={"drop_id": drop_id}).data)

    @extend_schema(
        operation_id="drops_waitlist_leave",
        responses={204: OpenApiResponse(description="Left"), **error_responses(401, 404)},
        summary="Leave the line (an outstanding offer is released to the next in line)",
    )
    def delete(self, request: Request, drop_id: int) -> Response:
        services.drop_waitlist_leave(drop_id=drop_id, customer_id=request.user.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReservationListApi(generics.ListAPIView):
    permission_classes = [IsAuthenticated]
    serializer_class = ReservationSerializer

    def get_queryset(self):
        return _own_reservations(self.request)

    @extend_schema(
        operation_id="reservations_list",
        responses={200: ReservationSerializer(many=True), **error_responses(400, 401)},
        summary="Your holds, newest first",
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class ReservationDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="reservations_retrieve",
        responses={200: ReservationSerializer, **error_responses(401, 404)},
        summary="One of your holds",
    )
    def get(self, request: Request, reservation_id: int) -> Response:
        reservation = _own_reservations(request).filter(pk=reservation_id).first()
        if reservation is None:
            raise NotFound("No such reservation.")
        return Response(ReservationSerializer(reservation).data)

    @extend_schema(
        operation_id="reservations_release",
        responses={204: OpenApiResponse(description="Released"), **error_responses(401, 404, 409)},
        summary="Release a held reservation: its units go back on sale",
    )
    def delete(self, request: Request, reservation_id: int) -> Response:
        inventory_services.reservation_release(
            reservation_id=reservation_id, customer_id=request.user.pk, actor=None
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


def _own_reservations(request: Request):
    # The serializer names each hold's drop.
    return inventory_selectors.reservations_of(customer_id=request.user.pk).select_related(
        "allocation__drop"
    )


def _valid(serializer_class, request: Request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
