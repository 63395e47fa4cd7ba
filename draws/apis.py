"""HTTP interface of draws: thin views over the services."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.schema import ErrorSerializer, error_responses
from core.api.throttles import client_address
from core.exceptions import NotFound
from draws import selectors, services
from draws.models import EntryRules
from draws.serializers import (
    DrawSerializer,
    EntryRulesSerializer,
    EntrySerializer,
    EntrySubmitSerializer,
)
from livestream.models import Drop


class DrawEntriesApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="drops_enter",
        request=EntrySubmitSerializer,
        responses={
            201: EntrySerializer,
            200: EntrySerializer,
            **error_responses(400, 401, 404, 409),
            503: OpenApiResponse(
                ErrorSerializer,
                description="`challenge_unavailable`: the entry check cannot be made now; "
                "send again shortly.",
            ),
        },
        summary="Enter a drop's draw (free; once per viewer)",
        description="`201` with your new entry, `200` with the one you have (whatever "
        "quantity you send now). Refusals: `409` `entries_closed`, `drop_not_live` (not "
        "pinned yet, or not sold by draw), `not_eligible` (with `reason`: "
        "`account_too_new`, `watch_too_short`, `challenge_required`, `challenge_failed`, "
        "`address_cap`); "
        "`503` `challenge_unavailable` when the entry check cannot be made.",
    )
    def post(self, request: Request, drop_id: int) -> Response:
        serializer = EntrySubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        entry, created = services.entry_submit(
            drop_id=drop_id,
            customer_id=request.user.pk,
            quantity=serializer.validated_data["quantity"],
            client_address=client_address(request),
            challenge_token=serializer.validated_data.get("challenge_token"),
        )
        body = selectors.entry_body(entry, drop_id=drop_id)
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class DrawEntryMineApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="drops_entry_retrieve",
        responses={200: EntrySerializer, **error_responses(401, 404)},
        summary="Your entry: entered, then won (with your offer) or lost (your place in line)",
    )
    def get(self, request: Request, drop_id: int) -> Response:
        entry = selectors.entry_of(drop_id=drop_id, customer_id=request.user.pk)
        return Response(selectors.entry_body(entry, drop_id=drop_id))


class DrawApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="drops_draw_retrieve",
        responses={200: DrawSerializer, **error_responses(404)},
        summary="A drop's draw: commitment, then the seed and the winners",
        description="Winners are the entries in increasing order of lowercase hex "
        "HMAC-SHA256(key=seed, message=entry id in decimal), each taking its quantity "
        "while units remain (an entry that no longer fits is skipped); `seed_commitment` "
        "is the lowercase hex SHA-256 of `seed`.",
    )
    def get(self, request: Request, drop_id: int) -> Response:
        return Response(selectors.draw_public(drop_id=drop_id))


class DrawEntryRulesApi(APIView):
    def get_permissions(self):
        return [IsAuthenticated()] if self.request.method == "PUT" else [AllowAny()]

    @extend_schema(
        operation_id="drops_entry_rules_retrieve",
        responses={200: EntryRulesSerializer, **error_responses(404)},
        summary="Who may enter a draw drop",
    )
    def get(self, request: Request, drop_id: int) -> Response:
        if not Drop.objects.filter(pk=drop_id).exists():
            raise NotFound("No such drop.")
        rules = EntryRules.objects.filter(drop_id=drop_id).first()
        return Response(EntryRulesSerializer(rules or EntryRules()).data)

    @extend_schema(
        operation_id="drops_entry_rules_set",
        request=EntryRulesSerializer,
        responses={200: EntryRulesSerializer, **error_responses(400, 401, 403, 404, 409)},
        summary="Set who may enter a draw drop, before its pin (the host or staff)",
        description="Every rule as given (an empty one is off). `409` `rules_fixed` once "
        "entries opened, `drop_not_live` on a drop not sold by draw.",
    )
    def put(self, request: Request, drop_id: int) -> Response:
        serializer = EntryRulesSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rules = services.entry_rules_set(
            drop_id=drop_id, actor=request.user, **serializer.validated_data
        )
        return Response(EntryRulesSerializer(rules).data)
