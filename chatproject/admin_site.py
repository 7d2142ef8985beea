"""The admin site: Django's, with its login page throttled like every other login.

`MessengerAdminConfig` takes the place of `django.contrib.admin` in INSTALLED_APPS
(Django's documented way to replace the default site), so `admin.site` and every
`@admin.register` in the apps use `MessengerAdminSite`.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse

from accounts.throttling import throttled_status


class MessengerAdminConfig(AdminConfig):
    default_site = "chatproject.admin_site.MessengerAdminSite"


class MessengerAdminSite(admin.AdminSite):
    @property
    def login_form(self):
        # Not at import time: this module is imported while the apps are still loading,
        # and the form's module imports the user model.
        from accounts.forms import AdminLoginForm

        return AdminLoginForm

    @login_not_required
    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        """Too many submissions from one address answer 429 with the form again."""
        return throttled_status(super().login(request, extra_context))
