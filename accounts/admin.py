from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "email", "is_active", "is_staff", "date_joined", "last_seen")
    list_filter = ("is_active", "is_staff", "is_superuser", "date_joined")
    readonly_fields = ("last_seen", "last_login", "date_joined")
    fieldsets = (*BaseUserAdmin.fieldsets, ("Presence", {"fields": ("last_seen",)}))
    actions = ["deactivate_users"]

    @admin.action(description="Deactivate the selected users and close their connections", permissions=["change"])
    def deactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        # One save() per user, never queryset.update(): whoever keeps state about a user
        # hears of it from post_save (messaging closes the user's open sockets then).
        with transaction.atomic():
            users = list(queryset.filter(is_active=True).exclude(pk=request.user.pk))
            for user in users:
                user.is_active = False
                user.save(update_fields=["is_active"])
        self.message_user(request, f"{len(users)} user(s) deactivated.", messages.SUCCESS)
