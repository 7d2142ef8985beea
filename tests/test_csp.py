"""The Content-Security-Policy (django-csp, chatproject/settings.py): defence in depth
against stored XSS. Markup that slipped through escaping could still not run a script,
load one from elsewhere, send data off-site or frame the page.

Headless Chromium checks that the pages, the admin and the API docs really run under
it, with no violation reported: tests/e2e/test_browser_chat.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from django.test import Client
from django.urls import reverse

from tests.procs import ROOT

STRICT = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    parsed = {}
    for part in filter(None, (item.strip() for item in header.split(";"))):
        name, *values = part.split()
        assert name not in parsed, f"{name} twice in {header!r}"
        parsed[name] = values
    return parsed


def assert_strict(response, url: str) -> None:
    policy = directives(response)
    connect = policy.pop("connect-src")
    assert policy == STRICT, url
    # The same origin, and WebSockets to the site's own origin only: never a bare
    # `ws:`/`wss:` scheme, which would allow any host.
    assert connect[0] == "'self'", url
    assert all(re.fullmatch(r"wss?://[^/*\s]+", source) for source in connect[1:]), connect
    assert "unsafe" not in response["Content-Security-Policy"], url


@pytest.mark.django_db
def test_the_pages_of_a_signed_in_user_have_the_strict_policy(alice, bob):
    browser = Client()
    browser.force_login(alice)
    for url in (reverse("home"), reverse("users"), reverse("chat", args=["bob"]), reverse("settings")):
        page = browser.get(url)
        assert page.status_code == 200, url
        assert_strict(page, url)


@pytest.mark.django_db
def test_the_login_and_register_pages_have_the_strict_policy():
    for url in (reverse("login"), reverse("register")):
        page = Client().get(url)
        assert page.status_code == 200, url
        assert_strict(page, url)


@pytest.mark.django_db
def test_a_login_form_with_errors_and_a_redirect_have_it_too(alice):
    failed = Client().post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert failed.status_code == 200
    assert_strict(failed, "failed login")
    redirect = Client().get(reverse("home"))
    assert redirect.status_code == 302
    assert_strict(redirect, "redirect to login")


@pytest.mark.django_db
def test_the_admin_has_the_same_strict_policy(admin_client, alice):
    for url in (
        reverse("admin:login"),
        reverse("admin:index"),
        reverse("admin:accounts_user_changelist"),
        reverse("admin:accounts_user_change", args=[alice.pk]),
        reverse("admin:accounts_user_add"),
    ):
        client = Client() if url == reverse("admin:login") else admin_client
        page = client.get(url)
        assert page.status_code == 200, url
        assert_strict(page, url)


@pytest.mark.django_db
def test_the_api_docs_have_the_same_strict_policy_and_nothing_inline(client):
    page = client.get(reverse("api-docs"))
    assert page.status_code == 200
    assert_strict(page, "api docs")
    html = page.content.decode()
    assert "<style" not in html
    # Every script is a file; Swagger UI's start-up script is served from ?script.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.DOTALL)
    assert scripts and all('src="' in attrs and not body.strip() for attrs, body in scripts), scripts
    start_up = client.get(f"{reverse('api-docs')}?script=")
    assert start_up.status_code == 200
    assert start_up["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in start_up.content.decode()


@pytest.mark.django_db
def test_the_api_answers_carry_the_policy_too(alice_client):
    response = alice_client.get(reverse("api-me"))
    assert response.status_code == 200
    assert_strict(response, "api")


# A fresh template with an inline script, handler or style would be blocked by the
# browser (and reported by the e2e test); this finds it without a browser.
INLINE = {
    "inline script": re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE),
    "event handler attribute": re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE),
    "style attribute": re.compile(r"<[^>]+\sstyle\s*=", re.IGNORECASE),
    "style element": re.compile(r"<style\b", re.IGNORECASE),
    "javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
}


def test_no_template_has_inline_script_or_style():
    templates = sorted((ROOT / "templates").rglob("*.html"))
    assert len(templates) >= 8
    found = [
        f"{path.relative_to(ROOT)}: {kind}"
        for path in templates
        for kind, pattern in INLINE.items()
        if pattern.search(path.read_text())
    ]
    assert found == []


def test_the_telegram_qr_code_is_plain_svg_markup():
    # Inline in /settings/ (not an <img>): it must carry no style or script of its own.
    from notifications.views import _qr_svg

    svg = str(_qr_svg("https://t.me/messenger_bot?start=abc123"))
    assert svg.startswith("<svg")
    assert not any(pattern.search(svg) for pattern in INLINE.values()), svg


def test_the_websocket_source_follows_site_url():
    code = (
        "import django; django.setup(); from django.conf import settings;"
        "print(*settings.CONTENT_SECURITY_POLICY['DIRECTIVES']['connect-src'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        SECRET_KEY="x" * 50,
        SITE_URL="https://chat.example.com",
        DJANGO_SETTINGS_MODULE="chatproject.settings",
        ENV_FILE="/dev/null",
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["'self'", "wss://chat.example.com"]
