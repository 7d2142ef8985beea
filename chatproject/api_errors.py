"""The REST API's exception handler (`REST_FRAMEWORK["EXCEPTION_HANDLER"]`): DRF's,
plus what Django raises while DRF reads the body. A body over
`DATA_UPLOAD_MAX_MEMORY_SIZE` raises `RequestDataTooBig`, which Django would answer
with its HTML "Bad Request" page; an API client gets the contract's JSON error and a
413 instead."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

# Where Django itself logs what it refuses as suspicious, this one included.
security_logger = logging.getLogger("django.security.RequestDataTooBig")


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        request = context.get("request")
        security_logger.warning("%s: %s", getattr(request, "path", "?"), exc)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"The request body is too large (at most {limit} bytes)."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    return drf_exception_handler(exc, context)
