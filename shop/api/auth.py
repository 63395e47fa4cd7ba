"""Register, log in (token), log out."""

from __future__ import annotations

from django.contrib.auth import authenticate, get_user_model, password_validation
from django.contrib.auth.signals import user_logged_out
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.authentication import WS_TICKET_SECONDS, token_forget, ws_ticket_issue
from core.api.fields import StrictCharField
from core.api.schema import error_responses
from core.api.throttles import AuthIPThrottle
from core.exceptions import DomainError
from shop.services.accounts import UsernameTaken, account_register


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    http_status = 401
    default_detail = "Unable to log in with these credentials."


class CredentialsSerializer(serializers.Serializer):
    # Not trimmed: a name is what it is; a wrong one simply does not log in.
    username = StrictCharField(max_length=150, trim_whitespace=False)
    password = StrictCharField(max_length=128, trim_whitespace=False)


class RegisterSerializer(CredentialsSerializer):
    def validate_username(self, value: str) -> str:
        User = get_user_model()
        User.username_validator(value)  # letters, digits and @/./+/-/_ only
        if User.objects.filter(username__iexact=value).exists():
            raise serializers.ValidationError("This username is taken.")
        return value

    def validate(self, attrs):
        user = get_user_model()(username=attrs["username"])
        try:
            password_validation.validate_password(attrs["password"], user)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)}) from exc
        return attrs


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [AuthIPThrottle]

    @extend_schema(
        operation_id="auth_register",
        request=CredentialsSerializer,
        responses={201: TokenSerializer, **error_responses(400, 429)},
        summary="Create an account and get its API token",
    )
    def post(self, request: Request) -> Response:
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            token = account_register(username=data["username"], password=data["password"])
        except UsernameTaken as exc:  # the same name registered concurrently
            raise serializers.ValidationError({"username": ["This username is taken."]}) from exc
        return Response({"token": token.key}, status=status.HTTP_201_CREATED)


class TokenApi(APIView):
    permission_classes = [AllowAny]
    # Logging in needs no credentials (and must not trip over a stale session's CSRF).
    authentication_classes: list = []
    throttle_classes = [AuthIPThrottle]

    @extend_schema(
        operation_id="auth_token",
        request=CredentialsSerializer,
        responses={200: TokenSerializer, **error_responses(400, 401, 429)},
        summary="Exchange username and password for the API token",
    )
    def post(self, request: Request) -> Response:
        serializer = CredentialsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # The password is verified with no database connection held (shop.passwords,
        # the configured backend): a sign-in surge waits for CPU, never for the pool.
        user = authenticate(
            request._request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
        )
        if user is None or not user.is_active:
            raise InvalidCredentials()
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


class WsTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField(help_text="Open the websocket with `?ticket=<ticket>`.")
    expires_in = serializers.IntegerField(help_text="Seconds it stays valid (used once).")


class WsTicketApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="auth_ws_ticket",
        request=None,
        responses={201: WsTicketSerializer, **error_responses(401)},
        summary="A single-use ticket to open a websocket as yourself (`?ticket=`, 30 s)",
        description="Put the ticket in the websocket URL instead of the long-lived token "
        "(`?token=` still works): URLs end up in logs. It is good for one connection, "
        "and only while the token or session that asked for it is still valid.",
    )
    def post(self, request: Request) -> Response:
        # request.auth is the token when one authenticated the request; else the session.
        token = request.auth if isinstance(request.auth, str) else None
        session_key = None if token else request.session.session_key
        ticket = ws_ticket_issue(user_id=request.user.pk, token=token, session_key=session_key)
        return Response(
            {"ticket": ticket, "expires_in": WS_TICKET_SECONDS}, status=status.HTTP_201_CREATED
        )


class LogoutApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="auth_logout",
        request=None,
        responses={204: OpenApiResponse(description="Token revoked"), **error_responses(401)},
        summary="Revoke the API token (log out everywhere)",
    )
    def post(self, request: Request) -> Response:
        for token in Token.objects.filter(user_id=request.user.pk):
            token_forget(token.key)
            token.delete()
        # Django's logout notice, as a session logout sends it: whatever was granted
        # on these tokens elsewhere (open websockets) ends too. After the delete, so a
        # client reconnecting at once is no longer this user.
        user_logged_out.send(sender=type(request.user), request=request._request, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
