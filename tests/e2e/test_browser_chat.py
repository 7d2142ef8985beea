"""The browser chat end to end: real daphne, PostgreSQL, Redis and headless Chromium.

Two people register through the register page, find each other on the users page and
talk (live messages, typing, read receipts, links, markup shown as text); a third one
writes to one of them so that the home page has badges to bump and rows to reorder.
Along the way: desktop notifications while hidden, a send that fails and is retried,
a `more: true` sync, drafts, the unread divider, keyboard navigation. Then the server
is restarted under an open chat, and a long history is scrolled through. Starting the
browser and the server is what costs the time, so all of it is one scenario, with
screenshots (test-artifacts/screenshots/, and docs/screenshots/chat.png for the README).

Every watched page must run without the browser reporting a Content-Security-Policy
violation; a shorter test before the scenario does the same for the admin, Swagger UI
and the settings page, and shows that the policy blocks injected markup.
"""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.models import User
from messaging.models import Message
from tests.e2e.conftest import DESKTOP, PHONE, save_screenshot, start_server
from tests.procs import require_stack

pytestmark = [
    pytest.mark.stack,
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(240),
]

PASSWORD = "a-long-and-unusual-passphrase-42"
XSS = "<img src=x onerror=alert(1)>"
WAIT = 15_000  # ms: generous for a loaded 2-core machine; expect() returns as soon as it holds


# Runs before any script of every document of a watched page, whatever the page's
# Content-Security-Policy: every violation the browser reports reaches the test.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__reportCspViolation(
    `${location.pathname}: ${event.effectiveDirective} blocked ${event.blockedURI || "?"}` +
      ` (${event.sourceFile || "document"}:${event.lineNumber}) ${event.sample}`.trimEnd()
  );
});
"""


class PageProblems:
    """Collects what must never happen on a page: uncaught errors, dialogs, and
    anything the Content-Security-Policy blocked (reported by the event, and by
    Chromium's console message as a second net)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.csp_violations: list[str] = []
        self.csp_console: list[str] = []

    def watch(self, page: Page) -> Page:
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        page.on("dialog", self._on_dialog)
        page.expose_function("__reportCspViolation", self._on_csp_violation)
        page.add_init_script(REPORT_CSP_VIOLATIONS)
        page.on("console", self._on_console)
        return page

    def _on_csp_violation(self, report: str) -> None:
        self.csp_violations.append(report)

    def _on_console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.csp_console.append(message.text)

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


class SocketProxy:
    """A Playwright WebSocket route between a page and the real server."""

    def __init__(self) -> None:
        self.swallow_sends = False
        self.more_once = False
        self.swallowed: list[dict] = []
        self.forwarded: list[dict] = []
        self.syncs: list[int] = []
        self.replayed: int | None = None  # messages sent after the rewritten `synced`

    def handle(self, ws) -> None:
        server = ws.connect_to_server()

        def from_page(frame: str) -> None:
            data = json.loads(frame)
            if data.get("type") == "sync":
                self.syncs.append(data["since"])
            if data.get("type") == "send":
                (self.swallowed if self.swallow_sends else self.forwarded).append(data)
                if self.swallow_sends:
                    return
            server.send(frame)

        def from_server(frame: str) -> None:
            data = json.loads(frame)
            if data.get("type") == "synced" and self.more_once:
                # As if the server had stopped at its batch limit before everything the
                # page has: the next round repeats all of it.
                self.more_once = False
                self.replayed = 0
                frame = json.dumps({"type": "synced", "last_id": 0, "more": True})
            elif data.get("type") == "message" and self.replayed is not None:
                self.replayed += 1
            ws.send(frame)

        ws.on_message(from_page)
        server.on_message(from_server)


def register(page: Page, base: str, username: str, screenshot: str | None = None) -> None:
    page.goto(f"{base}/accounts/register/")
    if screenshot:
        save_screenshot(page, screenshot)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Register").click()
    expect(page).to_have_url(f"{base}/")


def wait_connected(page: Page) -> None:
    expect(page.locator("body")).to_have_attribute("data-socket-state", "ready", timeout=WAIT)


def open_chat_from_users_page(page: Page, base: str, search: str, username: str) -> None:
    page.get_by_role("link", name="All users").first.click()
    expect(page).to_have_url(f"{base}/users/")
    page.get_by_label("Search users").press_sequentially(search, delay=40)
    # Live search: the list narrows while typing, without submitting the form.
    expect(page.locator("[data-user-list] .user-row")).to_have_count(1, timeout=WAIT)
    expect(page).to_have_url(re.compile(rf"\?q={search}$"))
    page.locator(f'[data-user-list] .user-row[data-username="{username}"]').click()
    expect(page).to_have_url(f"{base}/chat/{username}/")
    wait_connected(page)


def tab_to(page: Page, selector: str, presses: int = 25) -> None:
    """Press Tab until the element has the focus, as a keyboard user would."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.locator(selector).evaluate("node => node === document.activeElement"):
            return
    raise AssertionError(f"{selector} is not reachable with Tab")


def send(page: Page, text: str) -> None:
    composer = page.get_by_label(re.compile(r"^Message to "))
    composer.fill(text)
    composer.press("Enter")
    expect(composer).to_have_value("")


def message(page: Page, text: str):
    return page.locator(".msg").filter(has=page.locator(".msg-body", has_text=text))


def rest_send(page: Page, base: str, to: str, body: str) -> dict:
    """A REST send with the browser session of `page`'s context, CSRF token and all."""
    cookies = {c["name"]: c["value"] for c in page.context.cookies(base)}
    response = page.context.request.post(
        f"{base}/api/conversations/{to}/messages/",
        data={"body": body},
        headers={"X-CSRFToken": cookies["csrftoken"], "Referer": f"{base}/chat/{to}/"},
    )
    assert response.status == 201, response.text()
    return response.json()


HISTORY = 120

FAKE_NOTIFICATIONS = """
window.__notifications = [];
window.__hidden = false;
class FakeNotification {
  static permission = "default";
  static async requestPermission() { FakeNotification.permission = "granted"; return "granted"; }
  constructor(title, options) { window.__notifications.push({ title, body: options.body, tag: options.tag }); }
  addEventListener() {}
  close() {}
}
window.Notification = FakeNotification;
Object.defineProperty(Document.prototype, "visibilityState", { get: () => (window.__hidden ? "hidden" : "visible") });
Object.defineProperty(Document.prototype, "hidden", { get: () => window.__hidden });
"""


def check_long_history(alice: Page, carol: Page, base: str) -> None:
    for n in range(1, HISTORY + 1):
        rest_send(carol, base, "alice", f"History {n:03}")
    # Spread them over five days, oldest first. Nobody has read this conversation yet,
    # so its history cache is empty and fills from the database with these dates.
    now = timezone.now()
    for stored in Message.objects.filter(body__startswith="History "):
        position = int(stored.body.split()[1])
        Message.objects.filter(pk=stored.pk).update(created_at=now - timedelta(hours=(HISTORY - position)))

    alice.goto(f"{base}/chat/carol/")
    wait_connected(alice)
    scroller = alice.locator("[data-scroller]")
    # All 120 are unread: the page opens at the divider, not at the bottom.
    expect(alice.locator("[data-unread-divider]")).to_be_visible()
    expect(alice.locator("[data-jump-latest]")).to_be_visible()
    for _ in range(20):
        if alice.get_by_text("This is the beginning of your conversation with carol.").is_visible():
            break
        scroller.evaluate("node => { node.scrollTop = 0; }")
        alice.wait_for_timeout(300)
    expect(alice.get_by_text("This is the beginning of your conversation with carol.")).to_be_visible()
    expect(alice.locator(".msg")).to_have_count(HISTORY)
    bodies = alice.locator(".msg-body").all_inner_texts()
    assert bodies == [f"History {n:03}" for n in range(1, HISTORY + 1)]
    assert alice.locator(".day-heading").count() >= 5
    save_screenshot(alice, "chat-history-desktop")

    alice.locator("[data-jump-latest]").click()
    expect(alice.locator("[data-jump-latest]")).to_be_hidden(timeout=WAIT)
    expect(message(alice, f"History {HISTORY:03}")).to_be_in_viewport()
    # At the bottom of a visible tab everything is read: the title loses its count.
    expect(alice).to_have_title("carol · Messenger", timeout=WAIT)


def check_message_elsewhere_shows_a_toast(alice: Page, bob: Page, base: str) -> None:
    rest_send(bob, base, "alice", "Quick question about the slides")
    toast = alice.locator(".toast")
    expect(toast).to_contain_text("bob", timeout=WAIT)
    expect(toast).to_contain_text("Quick question about the slides")
    expect(alice).to_have_title("(1) carol · Messenger")
    alice.wait_for_timeout(300)  # let the toast finish sliding in for the picture
    save_screenshot(alice, "chat-toast-desktop")


INJECTED_MARKUP = """() => {
  const script = document.createElement("script");
  script.textContent = "window.__injected = 'script'";
  document.body.append(script);
  const holder = document.createElement("div");
  holder.innerHTML = `<img src="x" onerror="window.__injected = 'handler'"><p style="color: red">red</p>`;
  document.body.append(holder);
}"""


# First in the module: the chat scenario below stops the module's server for good.
def test_admin_api_docs_and_settings_run_under_the_content_security_policy(live_server_process, browser):
    """The admin and Swagger UI work under the same strict policy as the pages, and the
    policy really stops what stored XSS would inject (so the empty violation lists
    of these tests mean something)."""
    require_stack()
    base = live_server_process.url
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    problems = PageProblems()
    context = browser.new_context(viewport=DESKTOP, color_scheme="light")
    try:
        page = problems.watch(context.new_page())

        # --- Swagger UI: the bundle, the start-up script from ?script, the schema fetch.
        page.goto(f"{base}/api/docs/")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Messenger API", timeout=WAIT)
        operation = page.locator(".opblock").filter(has_text="/api/me/").first
        operation.locator(".opblock-summary").click()
        expect(operation.get_by_role("button", name="Try it out")).to_be_visible()
        save_screenshot(page, "api-docs-desktop")

        # --- The admin: log in, the user list, a change form, the add form.
        page.goto(f"{base}/admin/")
        page.get_by_label("Username").fill("root")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(f"{base}/admin/")
        page.goto(f"{base}/admin/accounts/user/")
        page.locator("#result_list tbody th a", has_text="root").click()
        expect(page.locator("#id_username")).to_have_value("root")
        page.get_by_role("button", name="Toggle theme").first.click()
        save_screenshot(page, "admin-user-desktop")
        page.goto(f"{base}/admin/accounts/user/add/")
        expect(page.locator("#id_username")).to_be_visible()

        # --- The settings page, with its WebSocket (connect-src 'self' covers ws:).
        page.goto(f"{base}/settings/")
        expect(page.get_by_role("heading", name="Settings")).to_be_visible()
        wait_connected(page)

        assert problems.errors == []
        assert problems.csp_violations == []
        assert problems.csp_console == []

        # --- What an injection would add is blocked, and reported.
        page.evaluate(INJECTED_MARKUP)
        deadline = time.monotonic() + 10
        while len(problems.csp_violations) < 3 and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert page.evaluate("window.__injected") is None
        directives = sorted(v.split()[1] for v in problems.csp_violations)
        assert directives == ["script-src-attr", "script-src-elem", "style-src-attr"], problems.csp_violations
        assert len(problems.csp_console) == 3, problems.csp_console
    finally:
        context.close()


def test_two_people_chat_live_and_the_page_survives_a_server_restart(live_server_process, browser):
    require_stack()
    server = live_server_process
    base = server.url
    problems = PageProblems()
    alice_context = browser.new_context(viewport=DESKTOP, color_scheme="light")
    bob_context = browser.new_context(viewport=DESKTOP, color_scheme="light")
    carol_context = browser.new_context(viewport=DESKTOP, color_scheme="light")
    try:
        # Others on the users page. Through the API: Playwright's sync API keeps an
        # event loop in this thread, where Django refuses ORM calls.
        for name in ("carol", "dave", "erin", "frank"):
            response = carol_context.request.post(
                f"{base}/api/auth/register/", data={"username": name, "password": PASSWORD}
            )
            assert response.status == 201, response.text()
        alice = problems.watch(alice_context.new_page())
        bob = problems.watch(bob_context.new_page())

        # --- Register through the page; the new home page points to the users page.
        register(alice, base, "alice", screenshot="register-desktop")
        expect(alice.locator("[data-conversations-empty]")).to_be_visible()
        expect(alice.get_by_role("link", name="Find people to talk to")).to_be_visible()
        register(bob, base, "bob")

        # --- Find each other on the users page, open the chat.
        open_chat_from_users_page(alice, base, "bo", "bob")
        expect(alice.get_by_text("No messages yet")).to_be_visible()
        open_chat_from_users_page(bob, base, "ali", "alice")

        # --- A message appears at once, is acknowledged, reaches bob live, gets read.
        send(alice, "Hi Bob! Lunch at noon?")
        first = message(alice, "Hi Bob! Lunch at noon?")
        expect(first).to_have_count(1)
        expect(message(bob, "Hi Bob! Lunch at noon?")).to_have_count(1, timeout=WAIT)
        # bob's tab is visible and at the bottom, so he reads it and alice sees that.
        expect(first).to_have_attribute("data-status", "read", timeout=WAIT)

        # --- Typing, then an answer with a link, made clickable safely.
        bob.get_by_label("Message to alice").press_sequentially("Sure", delay=30)
        expect(alice.locator("[data-typing]")).to_be_visible(timeout=WAIT)
        expect(alice.locator("[data-peer-status]")).to_have_text("typing…")
        save_screenshot(alice, "chat-typing-desktop")
        bob.get_by_label("Message to alice").fill("Sure! The menu: https://example.com/menu?day=mon.")
        bob.get_by_label("Message to alice").press("Enter")
        answer = message(alice, "Sure! The menu")
        expect(answer).to_have_count(1, timeout=WAIT)
        expect(alice.locator("[data-typing]")).to_be_hidden()
        link = answer.get_by_role("link")
        expect(link).to_have_attribute("href", "https://example.com/menu?day=mon")
        expect(link).to_have_attribute("rel", "noopener noreferrer")
        expect(message(bob, "Sure! The menu")).to_have_attribute("data-status", "read", timeout=WAIT)
        expect(alice.locator("[data-peer-status]")).to_have_text("online")

        # --- Markup in a message is text, on both sides; no dialog ever opens.
        send(alice, XSS)
        expect(message(alice, XSS)).to_have_attribute("data-status", re.compile("sent|read"), timeout=WAIT)
        expect(message(bob, XSS)).to_have_count(1, timeout=WAIT)
        for page in (alice, bob):
            expect(page.locator(".msg-body img")).to_have_count(0)
            assert page.locator(".msg-body").filter(has_text=XSS).first.inner_text() == XSS
        send(alice, "Multi-line works too:\nline two")
        expect(message(alice, "line two")).to_have_attribute("data-status", "read", timeout=WAIT)

        # --- Home page: badges and ordering are live.
        bob.get_by_role("link", name="Back to chats").click()
        expect(bob).to_have_url(f"{base}/")
        wait_connected(bob)
        rows = bob.locator("[data-conversations] > li")
        expect(rows).to_have_count(1)
        alice_row = rows.filter(has=bob.locator(".conversation-name", has_text="alice"))
        expect(alice_row.locator("[data-unread]")).to_be_hidden()
        expect(alice_row.locator("[data-preview]")).to_contain_text("line two")

        carol = problems.watch(carol_context.new_page())
        carol.goto(f"{base}/accounts/login/")
        carol.get_by_label("Username").fill("carol")
        carol.get_by_label("Password").fill(PASSWORD)
        carol.get_by_role("button", name="Log in").click()
        expect(carol).to_have_url(f"{base}/")
        carol.goto(f"{base}/chat/bob/")
        wait_connected(carol)
        send(carol, "Hey bob, are you coming to the meetup tonight?")
        expect(rows).to_have_count(2, timeout=WAIT)
        expect(rows.first).to_have_attribute("data-peer", "carol")
        expect(rows.first.locator("[data-unread]")).to_have_text("1")
        expect(bob).to_have_title("(1) Chats · Messenger")

        send(alice, "Ça marche, see you there!")
        send(alice, "I'll bring the slides")
        expect(rows.first).to_have_attribute("data-peer", "alice", timeout=WAIT)
        expect(rows.first.locator("[data-unread]")).to_have_text("2")
        expect(rows.first.locator("[data-preview]")).to_have_text("I'll bring the slides")
        expect(rows.nth(1).locator("[data-preview]")).to_contain_text("meetup tonight")
        expect(bob).to_have_title("(3) Chats · Messenger")
        expect(alice.locator('.msg[data-status="sent"]')).to_have_count(2)  # bob is not reading

        # --- On carol's home, her own last message reads "You: …".
        carol.goto(f"{base}/")
        carol_preview = carol.locator('[data-peer="bob"] [data-preview]')
        expect(carol_preview).to_have_text("You: Hey bob, are you coming to the meetup tonight?")

        # --- Desktop notifications, asked for on a click, only while the tab is hidden.
        # The browser's Notification and page visibility are stood in for in carol's
        # page: headless Chromium shows no notifications and never hides a tab.
        carol_context.add_init_script(FAKE_NOTIFICATIONS)
        carol.reload()
        wait_connected(carol)
        carol.get_by_role("button", name="Enable notifications").click()
        expect(carol.get_by_role("button", name="Enable notifications")).to_be_hidden()
        carol.evaluate("window.__hidden = true")
        rest_send(bob, base, "carol", "Are you there, carol?")
        expect(carol.locator('[data-peer="bob"] [data-unread]')).to_have_text("1", timeout=WAIT)
        carol.evaluate("window.__hidden = false")
        rest_send(bob, base, "carol", "Never mind, I see you")
        expect(carol.locator('[data-peer="bob"] [data-unread]')).to_have_text("2", timeout=WAIT)
        shown = carol.evaluate("window.__notifications")
        assert shown == [{"title": "bob", "body": "Are you there, carol?", "tag": "messenger-bob"}]

        # --- A route in carol's page sits on her WebSocket: it can swallow her sends
        # and rewrite what the server answers.
        proxy = SocketProxy()
        carol.route_web_socket(re.compile(r"/ws/chat/$"), proxy.handle)
        carol.goto(f"{base}/chat/bob/")
        wait_connected(carol)

        # A send that is never answered turns "failed"; Retry sends it again under the
        # same client_id.
        proxy.swallow_sends = True
        send(carol, "Did this get through?")
        lost = message(carol, "Did this get through?")
        expect(lost).to_have_attribute("data-status", "failed", timeout=WAIT)
        expect(lost.get_by_text("Not sent.")).to_be_visible()
        proxy.swallow_sends = False
        lost.get_by_role("button", name="Retry").click()
        expect(lost).to_have_attribute("data-status", re.compile("sent|read"), timeout=WAIT)
        assert len(proxy.swallowed) == 1
        assert [f["client_id"] for f in proxy.forwarded] == [proxy.swallowed[0]["client_id"]]

        # `synced` with `more: true` makes the page sync again from its `last_id`;
        # messages that come twice are shown once.
        shown_before = carol.locator(".msg").count()
        proxy.syncs.clear()
        proxy.more_once = True
        carol.reload()
        wait_connected(carol)
        expect(carol.locator(".msg")).to_have_count(shown_before)
        deadline = time.monotonic() + 10
        while len(proxy.syncs) < 2 and time.monotonic() < deadline:
            carol.wait_for_timeout(100)
        assert proxy.syncs[0] > 0 and proxy.syncs[1] == 0, proxy.syncs
        carol.wait_for_timeout(500)  # let the second round land
        assert proxy.replayed >= shown_before
        expect(carol.locator(".msg")).to_have_count(shown_before)
        ids = carol.locator(".msg[data-id]").evaluate_all("nodes => nodes.map(n => n.dataset.id)")
        assert len(ids) == len(set(ids)), ids

        # --- Screenshots: desktop, then phone width.
        save_screenshot(bob, "home-desktop")
        alice.get_by_role("link", name="All users").first.click()
        expect(alice.locator("[data-user-list] .user-row")).to_have_count(5)
        save_screenshot(alice, "users-desktop")
        alice.goto(f"{base}/chat/bob/")
        expect(message(alice, "I'll bring the slides")).to_be_visible()
        wait_connected(alice)
        alice.get_by_label("Message to bob").fill("Draft: remember the projector")
        save_screenshot(alice, "chat-desktop", docs_copy="chat.png")
        alice.emulate_media(color_scheme="dark")
        save_screenshot(alice, "chat-desktop-dark")
        alice.emulate_media(color_scheme="light")
        for page in (alice, bob):
            page.set_viewport_size(PHONE)
        save_screenshot(bob, "home-phone")
        save_screenshot(alice, "chat-phone")
        bob.goto(f"{base}/users/")
        save_screenshot(bob, "users-phone")

        # --- The draft is kept per conversation.
        alice.reload()
        expect(alice.get_by_label("Message to bob")).to_have_value("Draft: remember the projector")
        alice.set_viewport_size(DESKTOP)
        bob.set_viewport_size(DESKTOP)
        wait_connected(alice)
        # bob opens the chat again, with the keyboard only: the divider marks where
        # the unread messages start.
        bob.goto(f"{base}/")
        tab_to(bob, '[data-peer="alice"] a')
        bob.keyboard.press("Enter")
        expect(bob).to_have_url(f"{base}/chat/alice/")
        divider = bob.locator("[data-unread-divider]")
        expect(divider).to_be_visible()
        expect(bob.locator("[data-unread-divider] + .msg .msg-body")).to_have_text("Ça marche, see you there!")
        expect(message(alice, "I'll bring the slides")).to_have_attribute("data-status", "read", timeout=WAIT)

        # --- Restart the server under the open pages. While alice is cut off, bob
        # sends over REST; when she is back her page shows each message once.
        server.stop()
        expect(alice.locator("[data-connection-banner]")).to_be_visible(timeout=WAIT)
        expect(alice.locator("[data-connection-text]")).to_have_text("Reconnecting…")
        alice_context.set_offline(True)
        server = start_server(port=server.port)
        try:
            rest_send(bob, base, "alice", "Sent while you were away (1)")
            rest_send(bob, base, "alice", "Sent while you were away (2)")
            assert alice.locator("body").get_attribute("data-socket-state") != "ready"
            expect(message(alice, "while you were away")).to_have_count(0)
            alice_context.set_offline(False)
            wait_connected(alice)
            expect(alice.locator("[data-connection-banner]")).to_be_hidden()
            expect(message(alice, "while you were away (1)")).to_have_count(1, timeout=WAIT)
            expect(message(alice, "while you were away (2)")).to_have_count(1)
            # A live message after the reconnect still arrives, and nothing came twice.
            wait_connected(bob)
            send(bob, "And this one live")
            expect(message(alice, "And this one live")).to_have_count(1, timeout=WAIT)
            ids = alice.locator(".msg[data-id]").evaluate_all("nodes => nodes.map(n => n.dataset.id)")
            assert len(ids) == len(set(ids)), ids
            assert alice.locator(".msg").count() == 9

            # --- A long history, spread over days: it loads upwards while scrolling.
            check_long_history(alice, carol, base)
            check_message_elsewhere_shows_a_toast(alice, bob, base)
        finally:
            server.stop()

        assert problems.dialogs == []
        assert problems.errors == []
        assert problems.csp_violations == []
        assert problems.csp_console == []
    finally:
        for context in (alice_context, bob_context, carol_context):
            context.close()
