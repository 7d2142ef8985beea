import pytest
from django.urls import reverse

from accounts.models import User
from accounts.tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

STRONG = "a-long-and-unusual-passphrase-42"


def test_login_page_is_served(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b'name="username"' in response.content and b"csrfmiddlewaretoken" in response.content


def test_pages_need_login(client):
    for name in ("home", "users", "settings"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_registration_creates_a_user_and_logs_them_in(client):
    response = client.post(
        reverse("register"), {"username": "dora", "email": "", "password1": STRONG, "password2": STRONG}
    )
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert User.objects.filter(username="dora").exists()
    assert client.get(reverse("home")).status_code == 200


def test_registration_shows_errors_and_keeps_input(client, alice):
    response = client.post(reverse("register"), {"username": "Alice", "password1": "short", "password2": "other"})
    assert response.status_code == 200
    content = response.content.decode()
    assert "A user with that username already exists." in content
    assert "didn’t match" in content
    assert 'value="Alice"' in content
    assert User.objects.count() == 1


def test_login_and_logout_in_the_browser(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("home")).status_code == 200
    assert client.get(reverse("logout")).status_code == 405  # logout is POST only
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("home")).status_code == 302


def test_wrong_password_in_the_browser_says_so(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_users_page_lists_and_searches_others(client, alice):
    UserFactory(username="bob")
    UserFactory(username="carol")
    client.force_login(alice)
    content = client.get(reverse("users")).content.decode()
    assert "bob" in content and "carol" in content and ">alice<" not in content
    assert reverse("chat", args=["bob"]) in content
    searched = client.get(reverse("users"), {"q": "car"}).content.decode()
    assert "carol" in searched and "/chat/bob/" not in searched
