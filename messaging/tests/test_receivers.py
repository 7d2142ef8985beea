"""Open sockets of an account that is deactivated or deleted are closed at once,
whichever way the admin does it: the change form, the bulk action, bulk delete."""

import pytest
from asgiref.sync import sync_to_async
from django.test import Client as HttpClient
from django.urls import reverse

from accounts.models import User
from accounts.tests.factories import UserFactory
from messaging.tests.ws import Client, connect

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED_4401 = {"type": "websocket.close", "code": 4401}


@pytest.fixture
def admin_browser(db) -> HttpClient:
    browser = HttpClient()
    browser.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return browser


async def _closed(tab: Client) -> dict:
    return await tab.ws.receive_output(3)


async def _still_open(tab: Client) -> bool:
    await tab.send({"type": "ping"})
    return (await tab.recv_type("pong"))["type"] == "pong"


def _changelist_action(browser: HttpClient, action: str, users: list[User], **extra: str):
    return browser.post(
        reverse("admin:accounts_user_changelist"),
        {"action": action, "_selected_action": [u.pk for u in users], "index": 0, **extra},
    )


async def test_the_admin_action_deactivates_the_selected_users_and_closes_only_their_sockets(
    admin_browser, alice, bob, carol
):
    alice_tabs = [await connect(alice), await connect(alice)]
    bob_ws, carol_ws = await connect(bob), await connect(carol)
    response = await sync_to_async(_changelist_action)(admin_browser, "deactivate_users", [alice, bob])
    assert response.status_code == 302
    for tab in [*alice_tabs, bob_ws]:
        assert await _closed(tab) == CLOSED_4401
    assert await _still_open(carol_ws)
    active = await sync_to_async(lambda: dict(User.objects.values_list("username", "is_active")))()
    assert active == {"root": True, "alice": False, "bob": False, "carol": True}
    await carol_ws.close()


async def test_the_admin_action_does_not_deactivate_the_admin_themselves(admin_browser, alice):
    root = await sync_to_async(User.objects.get)(username="root")
    await sync_to_async(_changelist_action)(admin_browser, "deactivate_users", [root, alice])
    assert await sync_to_async(lambda: User.objects.get(username="root").is_active)()
    assert not await sync_to_async(lambda: User.objects.get(username="alice").is_active)()


async def test_unticking_active_in_the_change_form_closes_the_users_sockets(admin_browser, alice):
    tab = await connect(alice)

    def save_inactive():
        # The form as the admin sends it with "Active" unticked (a checkbox left out).
        url = reverse("admin:accounts_user_change", args=[alice.pk])
        page = admin_browser.get(url)
        data = {"username": alice.username, "first_name": "", "last_name": "", "email": alice.email}
        for inline in page.context["inline_admin_formsets"]:  # other apps' inlines (Telegram)
            management = inline.formset.management_form
            data.update({f"{inline.formset.prefix}-{name}": value for name, value in management.initial.items()})
        return admin_browser.post(url, data)

    response = await sync_to_async(save_inactive)()
    assert response.status_code == 302, response.context["errors"]
    assert await _closed(tab) == CLOSED_4401
    assert not await sync_to_async(lambda: User.objects.get(pk=alice.pk).is_active)()


async def test_deleting_users_in_the_admin_closes_their_sockets(admin_browser, alice, bob, carol):
    alice_ws, bob_ws, carol_ws = await connect(alice), await connect(bob), await connect(carol)
    confirm = await sync_to_async(_changelist_action)(admin_browser, "delete_selected", [alice, bob])
    assert confirm.status_code == 200  # "Are you sure?"
    deleted = await sync_to_async(_changelist_action)(admin_browser, "delete_selected", [alice, bob], post="yes")
    assert deleted.status_code == 302
    for tab in (alice_ws, bob_ws):
        assert await _closed(tab) == CLOSED_4401
    assert await _still_open(carol_ws)
    assert await sync_to_async(lambda: sorted(User.objects.values_list("username", flat=True)))() == ["carol", "root"]
    await carol_ws.close()
