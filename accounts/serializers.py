from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.fields import get_error_detail
from rest_framework_simplejwt.serializers import TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts import presence
from accounts.models import User
from accounts.services import user_create


class UserListSerializer(serializers.ListSerializer):
    """Asks presence once for the whole page, not once per user."""

    def to_representation(self, data):
        users = list(data.all() if hasattr(data, "all") else data)
        self.context["online_ids"] = presence.online_user_ids(u.pk for u in users)
        return super().to_representation(users)


class UserSerializer(serializers.ModelSerializer):
    online = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "username", "online", "last_seen"]
        read_only_fields = fields
        list_serializer_class = UserListSerializer

    def get_online(self, user: User) -> bool:
        online_ids = self.context.get("online_ids")
        if online_ids is None:
            return presence.is_online(user.pk)
        return user.pk in online_ids


class MeSerializer(UserSerializer):
    telegram_linked = serializers.SerializerMethodField()

    class Meta(UserSerializer.Meta):
        fields = [*UserSerializer.Meta.fields, "telegram_linked"]
        read_only_fields = fields

    def get_telegram_linked(self, user: User) -> bool:
        # The link lives in the notifications app, which builds on accounts; its
        # reverse accessor is looked up by name so that accounts imports nothing of it.
        link = getattr(user, "telegram_link", None)
        return bool(link and getattr(link, "chat_id", None))


class RegisterSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(write_only=True, trim_whitespace=False, style={"input_type": "password"})
    email = serializers.EmailField(required=False, allow_blank=True, write_only=True)

    def create(self, validated_data: dict) -> User:
        try:
            return user_create(**validated_data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(get_error_detail(exc)) from exc


class RefreshTokenSerializer(serializers.Serializer):
    refresh = serializers.CharField()


class RevocableTokenRefreshSerializer(TokenRefreshSerializer):
    """simplejwt's refresh, which also refuses a refresh token issued before the
    user's current password (CHECK_REVOKE_TOKEN): simplejwt checks that claim on
    access tokens only, and would hand out an access token bound to fail."""

    def validate(self, attrs):
        refresh = self.token_class(attrs["refresh"])
        user_id = refresh.payload.get(jwt_settings.USER_ID_CLAIM)
        user = User.objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).only("password").first()
        if (
            jwt_settings.CHECK_REVOKE_TOKEN
            and user is not None
            and refresh.payload.get(jwt_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(user.password)
        ):
            raise AuthenticationFailed("The password has changed since this token was issued.", "password_changed")
        return super().validate(attrs)
