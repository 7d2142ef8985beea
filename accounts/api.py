"""REST endpoints for accounts: registration, JWT, the caller, the user directory."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenObtainPairView

from accounts.pagination import UsernamePagination
from accounts.selectors import user_list
from accounts.serializers import MeSerializer, RefreshTokenSerializer, RegisterSerializer, UserSerializer
from accounts.throttling import ClientAddressThrottle


class RegisterView(generics.CreateAPIView):
    serializer_class = RegisterSerializer
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [ClientAddressThrottle]
    throttle_scope = "register"


class TokenView(TokenObtainPairView):
    throttle_classes = [ClientAddressThrottle]
    throttle_scope = "login"


class LogoutView(APIView):
    """Blacklists the refresh token, so it can no longer be refreshed."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    def get_authenticate_header(self, request: Request) -> str:
        # Keeps a refused token a 401 (DRF answers 403 when no scheme is announced).
        return 'Bearer realm="api"'

    @extend_schema(request=RefreshTokenSerializer, responses={205: None})
    def post(self, request: Request) -> Response:
        serializer = RefreshTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            RefreshToken(serializer.validated_data["refresh"]).blacklist()
        except TokenError as exc:
            raise InvalidToken(exc.args[0]) from exc
        return Response(status=status.HTTP_205_RESET_CONTENT)


class MeView(generics.RetrieveAPIView):
    serializer_class = MeSerializer

    def get_object(self):
        return self.request.user


@extend_schema(parameters=[OpenApiParameter("search", str, description="Part of a username")])
class UserListView(generics.ListAPIView):
    serializer_class = UserSerializer
    pagination_class = UsernamePagination

    def get_queryset(self):
        return user_list(viewer=self.request.user, search=self.request.query_params.get("search", ""))
