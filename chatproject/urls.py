from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from chatproject.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script from ?script instead of inline,
    # and the template has no inline style: the Content-Security-Policy holds here too.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api_docs/swagger_ui.html"),
        name="api-docs",
    ),
    path("api/", include("accounts.api_urls")),
    path("api/", include("messaging.api_urls")),
    path("api/", include("notifications.api_urls")),
    path("", include("accounts.urls")),
    path("", include("messaging.urls")),
    path("", include("notifications.urls")),
]
