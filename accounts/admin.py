from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import User
from accounts.services import users_deactivate


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "email", "is_active", "is_staff", "date_joined", "last_seen")
    list_filter = ("is_active", "is_staff", "is_superuser", "date_joined")
    readonly_fields = ("last_seen", "last_login", "date_joined")
    fieldsets = (*BaseUserAdmin.fieldsets, ("Presence", {"fields": ("last_seen",)}))
    actions = ["deactivate_users"]

    @admin.action(description="Deactivate the selected users and close their connections", permissions=["change"])
    def deactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        count = users_deactivate(users=queryset, keep=request.user)
        self.message_user(request, f"{count} user(s) deactivated.", messages.SUCCESS)
