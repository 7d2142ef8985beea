"""REST endpoints for conversations, messages and read state. A REST send is the same
`message_send` as a WebSocket send: delivered, cached and notified alike."""

from __future__ import annotations

from urllib.parse import urlencode

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import presence
from accounts.pagination import Pagination
from accounts.serializers import UserSerializer
from messaging import delivery, selectors, services
from messaging.errors import ChatError, RateLimited
from messaging.serializers import (
    ConversationSerializer,
    MessageSendSerializer,
    MessageSerializer,
    ReadSerializer,
    message_dict,
)


class ChatAPIError(APIException):
    def __init__(self, error: ChatError) -> None:
        super().__init__(detail=error.detail, code=error.code)
        self.status_code = error.status
        if isinstance(error, RateLimited):
            self.wait = error.retry_after


def _page(results: list, next_url: str | None) -> Response:
    return Response({"results": results, "next": next_url})


def _page_schema(name: str, item: serializers.Serializer) -> serializers.Serializer:
    """The OpenAPI shape of a page, for views that paginate by hand."""
    return inline_serializer(name, {"results": item, "next": serializers.URLField(allow_null=True)})


class ConversationPagination(Pagination):
    ordering = ("-activity", "-id")


class ConversationListView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", str, description="The pagination cursor value (the `next` link sets it)"),
            OpenApiParameter("page_size", {"type": "integer", "minimum": 1}, description="At most 200, default 50"),
        ],
        responses=_page_schema("ConversationPage", ConversationSerializer(many=True)),
    )
    def get(self, request: Request) -> Response:
        paginator = ConversationPagination()
        rows = paginator.paginate_queryset(selectors.conversation_list(user=request.user), request, view=self)
        online_ids = presence.online_user_ids(row.peer_id for row in rows)
        context = {"request": request, "online_ids": online_ids}
        results = []
        for row in rows:
            last = row.conversation.last_message
            usernames = {request.user.pk: request.user.username, row.peer_id: row.peer.username}
            results.append(
                {
                    "peer": UserSerializer(row.peer, context=context).data,
                    "last_message": message_dict(last, usernames) if last else None,
                    "unread_count": row.unread_count,
                    "peer_read_up_to": row.peer_read_up_to,
                }
            )
        return paginator.get_paginated_response(results)


class MessagesView(APIView):
    def load_authenticated_user(self, user_id: int):
        """The token's user (accounts.authentication), read together with the
        conversation with the peer, which the history selector then finds loaded."""
        return selectors.user_with_conversation(user_id=user_id, peer_username=self.kwargs["username"])

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "before",
                {"type": "integer", "minimum": 1},
                description="Only messages older than this id (the `next` link sets it)",
            ),
            OpenApiParameter(
                "page_size", {"type": "integer", "minimum": 1, "maximum": 200}, description="1 to 200, default 50"
            ),
        ],
        responses=_page_schema("MessagePage", MessageSerializer(many=True)),
    )
    def get(self, request: Request, username: str) -> Response:
        before = _int_param(request, "before", default=None, minimum=1)
        limit = _int_param(request, "page_size", default=50, minimum=1, maximum=200)
        try:
            messages, more = selectors.message_history(
                user=request.user, peer_username=username, before=before, limit=limit
            )
        except ChatError as exc:
            raise ChatAPIError(exc) from exc
        next_url = None
        if more and messages:
            query = urlencode({"before": messages[-1]["id"], "page_size": limit})
            next_url = request.build_absolute_uri(f"{request.path}?{query}")
        return _page(messages, next_url)

    @extend_schema(request=MessageSendSerializer, responses={201: MessageSerializer})
    def post(self, request: Request, username: str) -> Response:
        serializer = MessageSendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            result = services.message_send(
                sender=request.user,
                recipient_username=username,
                body=serializer.validated_data["body"],
                client_id=serializer.validated_data.get("client_id"),
            )
        except ChatError as exc:
            raise ChatAPIError(exc) from exc
        # Answer only once the message is on its way to every socket (delivery.flush).
        delivery.flush_sync()
        return Response(message_dict(result.message), status=status.HTTP_201_CREATED)


class ReadView(APIView):
    @extend_schema(request=ReadSerializer, responses={204: None})
    def post(self, request: Request, username: str) -> Response:
        serializer = ReadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            services.conversation_mark_read(
                user=request.user, peer_username=username, up_to=serializer.validated_data["up_to"]
            )
        except ChatError as exc:
            raise ChatAPIError(exc) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


def _int_param(request: Request, name: str, *, default, minimum: int, maximum: int | None = None):
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise serializers.ValidationError({name: ["A whole number is required."]}) from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise serializers.ValidationError({name: [f"Must be {bounds}."]})
    return value
