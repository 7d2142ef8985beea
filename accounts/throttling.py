"""Login and registration throttles, shared by the REST endpoints and the HTML forms.

One algorithm and one set of counters: DRF's `ScopedRateThrottle`, with the rates of
`THROTTLE_RATES` (scopes `login` and `register`) and the counters in the default cache
(Redis when `REDIS_URL` is set, so every server process counts together). The token
endpoint, the login page and the admin's login page all count against `login` for
the client's address; the registration endpoint and page against `register`.

The count is per client address only, not per username as well: a per-account
counter would let anyone lock a person out of their account by failing to log in as
them a few times a minute.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from django.core.exceptions import ValidationError
from django.forms.utils import ErrorDict
from django.http import HttpRequest, HttpResponse
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle

THROTTLED_CODE = "throttled"


class ClientAddressThrottle(ScopedRateThrottle):
    """`ScopedRateThrottle` (the view's `throttle_scope`) counted per client address
    even for a signed-in caller, whose account would otherwise get a counter of its
    own (the admin's login page is open to signed-in users who are not staff).

    The address is DRF's `get_ident`: `REMOTE_ADDR`, or with `NUM_PROXIES` set the
    address that many hops from the right of `X-Forwarded-For`, the one the trusted
    proxy wrote. Works on Django's `HttpRequest` as on DRF's `Request`."""

    @property
    def THROTTLE_RATES(self) -> dict[str, str]:
        # Read when a request is counted rather than when the class is defined, so that
        # overridden settings (tests) apply here as they do to DRF's own settings.
        return api_settings.DEFAULT_THROTTLE_RATES

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def throttle_attempt(request: HttpRequest, *, scope: str) -> int | None:
    """Count one attempt of the client against `scope`. None when it is allowed;
    when it is not (and then it is not counted), the whole seconds to wait."""
    throttle = ClientAddressThrottle()
    if throttle.allow_request(request, SimpleNamespace(throttle_scope=scope)):
        return None
    wait = throttle.wait()
    return max(1, math.ceil(throttle.duration if wait is None else wait))


def throttled_message(seconds: int) -> str:
    return f"Too many attempts, try again in {seconds} second{'' if seconds == 1 else 's'}."


class ThrottledFormMixin:
    """For a form whose every submission is an attempt: validating a bound form counts
    one against `throttle_scope` for the client of `self.request`. A refused one is not
    validated at all (no password is checked, nothing is looked up); the form carries
    only the throttle's error, keeps what was typed, and `retry_after` says how long
    to wait. Views answer it with `throttled_status`."""

    throttle_scope: str
    request: HttpRequest | None
    retry_after: int | None = None
    # Provided by the form class it is mixed into.
    is_bound: bool
    renderer: Any
    cleaned_data: dict
    _errors: ErrorDict | None

    def full_clean(self) -> None:
        if self.is_bound:
            if self.request is None:
                raise TypeError(f"{type(self).__name__} needs the request to count attempts against")
            self.retry_after = throttle_attempt(self.request, scope=self.throttle_scope)
            if self.retry_after is not None:
                self._errors = ErrorDict(renderer=self.renderer)
                self.cleaned_data = {}
                self.add_error(None, ValidationError(throttled_message(self.retry_after), code=THROTTLED_CODE))
                return
        super().full_clean()


def throttled_status(response: HttpResponse) -> HttpResponse:
    """429 with `Retry-After` when the form a template response shows was refused by
    its throttle (`ThrottledFormMixin`); any other response as it is."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    retry_after = getattr(form, "retry_after", None)
    if retry_after is not None:
        response.status_code = 429
        response["Retry-After"] = str(retry_after)
    return response
