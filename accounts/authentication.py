"""Bearer-token authentication for the REST API."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication as SimpleJWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.models import User
from accounts.selectors import user_lean


class JWTAuthentication(SimpleJWTAuthentication):
    """simplejwt's, with the user read by `accounts.selectors.user_lean` instead of
    `User.objects.get()` (a quarter of a cached history page's CPU), or by the view's
    `load_authenticated_user(user_id)` when it has one (to read what it needs in the
    same query). The checks and their errors are simplejwt's `get_user`'s."""

    view: object = None

    def authenticate(self, request: Request):
        self.view = (getattr(request, "parser_context", None) or {}).get("view")
        return super().authenticate(request)

    def get_user(self, validated_token: Token) -> User:
        user_id = self.user_id(validated_token)
        load = getattr(self.view, "load_authenticated_user", None)
        return self.check_user(validated_token, load(user_id) if load else user_lean(user_id=user_id))

    @staticmethod
    def user_id(validated_token: Token) -> int:
        try:
            return int(validated_token[api_settings.USER_ID_CLAIM])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidToken(_("Token contained no recognizable user identification")) from exc

    @staticmethod
    def check_user(validated_token: Token, user: User | None) -> User:
        """The user the token names, however it was loaded, if the token may still act
        for them; raises `AuthenticationFailed` otherwise."""
        if user is None:
            raise AuthenticationFailed(_("User not found"), code="user_not_found")
        if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise AuthenticationFailed(_("User is inactive"), code="user_inactive")
        if api_settings.CHECK_REVOKE_TOKEN and validated_token.get(
            api_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise AuthenticationFailed(_("The user's password has been changed."), code="password_changed")
        return user


class JWTScheme(SimpleJWTScheme):
    """The OpenAPI security scheme of simplejwt's authentication, for this subclass."""

    target_class = JWTAuthentication
