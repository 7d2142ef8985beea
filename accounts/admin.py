from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts.models import User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "email", "is_active", "is_staff", "date_joined", "last_seen")
    list_filter = ("is_active", "is_staff", "is_superuser", "date_joined")
    readonly_fields = ("last_seen", "last_login", "date_joined")
    fieldsets = (*BaseUserAdmin.fieldsets, ("Presence", {"fields": ("last_seen",)}))
