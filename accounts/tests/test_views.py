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


# --- Throttled logins and registrations (accounts.throttling) ------------------------


@pytest.fixture
def rates(settings):
    """Sets THROTTLE_RATES as the environment variable would, for one test."""

    def set_rates(**rates: str) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates},
        }

    return set_rates


def _wrong_login(client, url: str = "", **extra):
    return client.post(url or reverse("login"), {"username": "alice", "password": "nope"}, **extra)


def test_too_many_browser_logins_answer_429_with_the_form_and_retry_after(client, alice, rates):
    rates(login="3/min")
    for _ in range(3):
        assert _wrong_login(client).status_code == 200

    response = client.post(reverse("login") + "?next=/users/", {"username": "alice", "password": PASSWORD})

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    content = response.content.decode()
    assert f"Too many attempts, try again in {response['Retry-After']} seconds." in content
    # The form is shown again with what was typed (never the password) and where to go.
    assert 'name="username"' in content and 'value="alice"' in content
    assert PASSWORD not in content
    assert 'name="next" value="/users/"' in content
    assert "csrfmiddlewaretoken" in content
    # The right password did not log in while throttled.
    assert client.get(reverse("home")).status_code == 302


def test_a_throttled_login_checks_no_password(client, alice, rates, monkeypatch):
    rates(login="1/min")
    _wrong_login(client)
    checked = []
    monkeypatch.setattr("django.contrib.auth.forms.authenticate", lambda *a, **k: checked.append(k))

    assert _wrong_login(client).status_code == 429
    assert checked == []


def test_showing_the_login_form_is_not_an_attempt(client, alice, rates):
    rates(login="2/min")
    for _ in range(5):
        assert client.get(reverse("login")).status_code == 200
    assert client.post(reverse("login"), {"username": "alice", "password": PASSWORD}).status_code == 302


def test_login_page_and_token_endpoint_count_together(client, api_client, alice, rates):
    rates(login="4/min")
    token_url = reverse("api-token")
    for _ in range(2):
        assert _wrong_login(client).status_code == 200
        assert api_client.post(token_url, {"username": "alice", "password": "nope"}, format="json").status_code == 401

    assert _wrong_login(client).status_code == 429
    assert api_client.post(token_url, {"username": "alice", "password": PASSWORD}, format="json").status_code == 429


def test_logins_are_counted_per_client_address(client, alice, rates):
    rates(login="2/min")
    for _ in range(2):
        _wrong_login(client)
    assert _wrong_login(client).status_code == 429
    assert _wrong_login(client, REMOTE_ADDR="10.0.0.2").status_code == 200


def test_a_forged_forwarded_for_header_gets_no_fresh_count(client, alice, rates, settings):
    rates(login="2/min")
    for i in range(2):
        _wrong_login(client, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}")
    # Without trusted proxies (NUM_PROXIES=0) the header is not read at all.
    assert _wrong_login(client, HTTP_X_FORWARDED_FOR="198.51.100.9").status_code == 429

    # Behind one proxy, the address it wrote last counts, whatever the client put before it.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    for i in range(2):
        _wrong_login(client, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}, 203.0.113.7")
    assert _wrong_login(client, HTTP_X_FORWARDED_FOR="198.51.100.9, 203.0.113.7").status_code == 429
    assert _wrong_login(client, HTTP_X_FORWARDED_FOR="198.51.100.9, 203.0.113.8").status_code == 200


def test_too_many_admin_logins_answer_429_with_the_admin_form(client, rates):
    UserFactory(username="root", is_staff=True, is_superuser=True)
    rates(login="2/min")
    url = reverse("admin:login") + "?next=/admin/"
    for _ in range(2):
        response = client.post(url, {"username": "root", "password": "nope"})
        assert response.status_code == 200 and "Please enter the correct username" in response.content.decode()

    response = client.post(url, {"username": "root", "password": PASSWORD})

    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    content = response.content.decode()
    assert "Too many attempts, try again in" in content
    assert 'id="login-form"' in content and 'value="root"' in content
    assert client.get(reverse("admin:index")).status_code == 302  # not logged in
    assert client.get(url).status_code == 200


def test_admin_and_browser_logins_count_together_even_for_a_signed_in_user(client, alice, rates):
    """The admin's login form is open to signed-in users who are not staff; they are
    counted by address like everyone, not given a counter of their own."""
    rates(login="2/min")
    _wrong_login(client)
    client.force_login(alice)

    assert client.post(reverse("admin:login"), {"username": "root", "password": "x"}).status_code == 200
    assert client.post(reverse("admin:login"), {"username": "root", "password": "x"}).status_code == 429


def test_too_many_registrations_answer_429_and_create_nobody(client, api_client, rates):
    def api_register(username: str, password: str) -> int:
        body = {"username": username, "password": password}
        return api_client.post(reverse("api-register"), body, format="json").status_code

    rates(register="3/hour")
    assert client.post(reverse("register"), {"username": "a1", "password1": "x", "password2": "y"}).status_code == 200
    assert api_register("a2", "x") == 400
    assert client.post(reverse("register"), {"username": "a3", "password1": "x", "password2": "y"}).status_code == 200

    response = client.post(
        reverse("register"),
        {"username": "dora", "email": "dora@example.com", "password1": STRONG, "password2": STRONG},
    )

    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    content = response.content.decode()
    assert "Too many attempts, try again in" in content
    assert 'value="dora"' in content and 'value="dora@example.com"' in content
    assert STRONG not in content
    assert not User.objects.exists()
    assert api_register("dora", STRONG) == 429
    assert client.get(reverse("register")).status_code == 200
