"""REST endpoints for the Telegram link: issue a deep link, unlink."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications import telegram
from notifications.services import link_token_create, telegram_unlink


class TelegramLinkSerializer(serializers.Serializer):
    url = serializers.URLField(read_only=True)
    expires_at = serializers.DateTimeField(read_only=True)


_UNAVAILABLE = inline_serializer("TelegramUnavailable", {"detail": serializers.CharField()})


class TelegramLinkView(APIView):
    @extend_schema(request=None, responses={201: TelegramLinkSerializer, 503: _UNAVAILABLE})
    def post(self, request: Request) -> Response:
        """A one-time deep link (valid 10 minutes) that links the Telegram chat opening it."""
        if not telegram.is_configured():
            return Response(
                {"detail": "Telegram notifications are not configured on this server."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        try:
            telegram.bot_username()
        except telegram.TelegramError:
            return Response(
                {"detail": "Telegram cannot be reached right now; try again later."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        issued = link_token_create(user=request.user)
        body = {"url": telegram.deep_link(issued.token), "expires_at": issued.expires_at}
        return Response(TelegramLinkSerializer(body).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request) -> Response:
        """Unlink the caller's Telegram chat; notifications stop."""
        telegram_unlink(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
