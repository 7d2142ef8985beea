"""/settings/: the Telegram link (with a QR code) and the mute switch."""

import segno
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from notifications import services, telegram
from notifications.selectors import notification_list_recent, telegram_link_get


def _render(request: HttpRequest, *, deep_link: str | None = None, expires_at=None, status: int = 200) -> HttpResponse:
    link = telegram_link_get(user=request.user)
    context = {
        "telegram_configured": telegram.is_configured(),
        "link": link,
        "linked": bool(link and link.is_linked),
        "muted": bool(link and link.muted),
        "deep_link": deep_link,
        "expires_at": expires_at,
        "qr_svg": _qr_svg(deep_link) if deep_link else None,
        "recent": notification_list_recent(user=request.user, limit=5),
    }
    return render(request, "notifications/settings.html", context, status=status)


def _qr_svg(url: str) -> str:
    # segno writes the SVG itself from the URL (only [A-Za-z0-9_:/.?=-] characters):
    # nothing user-controlled reaches the markup.
    svg = segno.make(url, error="m").svg_inline(scale=5, border=2, title="QR code of the Telegram link")
    return mark_safe(svg)  # noqa: S308


@login_required
@require_GET
def settings_page(request: HttpRequest) -> HttpResponse:
    return _render(request)


@login_required
@require_POST
def telegram_link(request: HttpRequest) -> HttpResponse:
    # The deep link is shown in this response only, not stored for a redirect: it
    # is a one-time credential.
    if not telegram.is_configured():
        messages.error(request, "Telegram notifications are not configured on this server.")
        return redirect("settings")
    try:
        telegram.bot_username()
    except telegram.TelegramError:
        messages.error(request, "Telegram cannot be reached right now; try again in a minute.")
        return redirect("settings")
    issued = services.link_token_create(user=request.user)
    return _render(request, deep_link=telegram.deep_link(issued.token), expires_at=issued.expires_at)


@login_required
@require_POST
def telegram_unlink(request: HttpRequest) -> HttpResponse:
    if services.telegram_unlink(user=request.user):
        messages.success(request, "Telegram unlinked: no more notifications there.")
    return redirect("settings")


@login_required
@require_POST
def notifications_mute(request: HttpRequest) -> HttpResponse:
    muted = request.POST.get("muted") == "on"
    services.telegram_mute_set(user=request.user, muted=muted)
    messages.success(request, "Notifications muted." if muted else "Notifications are on.")
    return redirect("settings")
