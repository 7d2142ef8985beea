import pytest
from django.urls import reverse

from accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_chat_page_frames_the_conversation_with_the_peer(client, alice, bob):
    client.force_login(alice)
    response = client.get(reverse("chat", args=["bob"]))
    assert response.status_code == 200
    content = response.content.decode()
    assert 'data-peer="bob"' in content and f'data-peer-id="{bob.pk}"' in content
    assert 'role="log"' in content and 'data-me="alice"' in content
    assert "js/chat.js" in content and "js/app.js" in content


def test_chat_page_is_404_for_unknown_and_inactive_users(client, alice):
    UserFactory(username="gone", is_active=False)
    client.force_login(alice)
    assert client.get(reverse("chat", args=["nobody"])).status_code == 404
    assert client.get(reverse("chat", args=["gone"])).status_code == 404


def test_chat_with_yourself_redirects_home(client, alice):
    client.force_login(alice)
    response = client.get(reverse("chat", args=["alice"]))
    assert response.status_code == 302 and response["Location"] == reverse("home")


def test_chat_page_needs_login(client, bob):
    response = client.get(reverse("chat", args=["bob"]))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_home_page_points_to_the_users_page_when_there_is_nothing_yet(client, alice):
    client.force_login(alice)
    content = client.get(reverse("home")).content.decode()
    assert "No conversations yet" in content and f'href="{reverse("users")}"' in content
    assert "js/home.js" in content


def test_pages_carry_no_script_from_elsewhere(client, alice, bob):
    """No CDN: every script and stylesheet is served by the project."""
    client.force_login(alice)
    for url in (reverse("home"), reverse("users"), reverse("chat", args=["bob"])):
        content = client.get(url).content.decode()
        assert "//cdn" not in content and 'src="http' not in content and 'href="http' not in content
