import pytest
from django.urls import reverse

from accounts import presence
from accounts.models import User
from accounts.tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

STRONG = "a-long-and-unusual-passphrase-42"


def register(client, **data):
    return client.post(reverse("api-register"), data, format="json")


def obtain(client, username, password=PASSWORD):
    return client.post(reverse("api-token"), {"username": username, "password": password}, format="json")


def test_register_creates_a_user_who_can_obtain_tokens(api_client):
    response = register(api_client, username="dora", password=STRONG, email="dora@example.com")
    assert response.status_code == 201
    assert response.json() == {"id": User.objects.get(username="dora").pk, "username": "dora"}
    tokens = obtain(api_client, "dora", STRONG)
    assert tokens.status_code == 200
    assert set(tokens.json()) == {"access", "refresh"}


def test_register_rejects_a_weak_password_per_field(api_client):
    response = register(api_client, username="dora", password="123")
    assert response.status_code == 400
    body = response.json()
    assert "password" in body and any("too short" in m for m in body["password"])
    assert not User.objects.filter(username="dora").exists()


def test_register_rejects_a_duplicate_username_case_insensitively(api_client, alice):
    response = register(api_client, username="ALICE", password=STRONG)
    assert response.status_code == 400
    assert response.json()["username"] == ["A user with that username already exists."]


def test_register_rejects_missing_fields_and_bad_names(api_client):
    assert register(api_client).json().keys() == {"username", "password"}
    response = register(api_client, username="no spaces!", password=STRONG)
    assert response.status_code == 400 and "username" in response.json()


def test_wrong_password_is_401_with_a_clear_message(api_client, alice):
    response = obtain(api_client, "alice", "wrong")
    assert response.status_code == 401
    assert response.json()["detail"] == "No active account found with the given credentials"


def test_refresh_rotates_and_a_used_refresh_token_is_refused(api_client, alice):
    refresh = obtain(api_client, "alice").json()["refresh"]
    url = reverse("api-token-refresh")
    rotated = api_client.post(url, {"refresh": refresh}, format="json")
    assert rotated.status_code == 200
    assert set(rotated.json()) == {"access", "refresh"}
    assert rotated.json()["refresh"] != refresh
    again = api_client.post(url, {"refresh": refresh}, format="json")
    assert again.status_code == 401


def test_logout_blacklists_the_refresh_token(api_client, alice):
    refresh = obtain(api_client, "alice").json()["refresh"]
    response = api_client.post(reverse("api-logout"), {"refresh": refresh}, format="json")
    assert response.status_code == 205
    refused = api_client.post(reverse("api-token-refresh"), {"refresh": refresh}, format="json")
    assert refused.status_code == 401
    assert api_client.post(reverse("api-logout"), {"refresh": refresh}, format="json").status_code == 401
    assert api_client.post(reverse("api-logout"), {}, format="json").status_code == 400


def test_full_api_flow_register_token_me_refresh_logout(api_client):
    register(api_client, username="erin", password=STRONG)
    tokens = obtain(api_client, "erin", STRONG).json()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    me = api_client.get(reverse("api-me"))
    assert me.status_code == 200
    assert me.json() == {
        "id": User.objects.get(username="erin").pk,
        "username": "erin",
        "online": False,
        "last_seen": None,
        "telegram_linked": False,
    }
    refreshed = api_client.post(reverse("api-token-refresh"), {"refresh": tokens["refresh"]}, format="json").json()
    assert api_client.post(reverse("api-logout"), {"refresh": refreshed["refresh"]}, format="json").status_code == 205


def test_me_requires_authentication(api_client):
    response = api_client.get(reverse("api-me"))
    assert response.status_code == 401
    assert "detail" in response.json()


def test_a_refresh_token_is_not_accepted_as_an_access_token(api_client, alice):
    refresh = obtain(api_client, "alice").json()["refresh"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {refresh}")
    assert api_client.get(reverse("api-me")).status_code == 401


def test_users_lists_everyone_but_the_caller_with_presence(alice_client, alice, bob, carol):
    presence.presence_connect(user_id=bob.pk, connection_id="tab-1")
    response = alice_client.get(reverse("api-users"))
    assert response.status_code == 200
    body = response.json()
    assert body["next"] is None
    assert [(u["username"], u["online"]) for u in body["results"]] == [("bob", True), ("carol", False)]
    assert set(body["results"][0]) == {"id", "username", "online", "last_seen"}


def test_users_search_and_pagination(alice_client, alice):
    for i in range(7):
        UserFactory(username=f"zed{i}")
    UserFactory(username="other", is_active=False)
    page = alice_client.get(reverse("api-users"), {"search": "ZED", "page_size": 5}).json()
    assert [u["username"] for u in page["results"]] == [f"zed{i}" for i in range(5)]
    rest = alice_client.get(page["next"]).json()
    assert [u["username"] for u in rest["results"]] == ["zed5", "zed6"]
    assert rest["next"] is None
    assert alice_client.get(reverse("api-users"), {"search": "other"}).json()["results"] == []


def test_login_is_throttled_with_retry_after(api_client, alice, settings):
    for _ in range(10):
        assert obtain(api_client, "alice", "wrong").status_code == 401
    response = obtain(api_client, "alice", PASSWORD)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "detail" in response.json()


def test_registration_is_throttled_per_client_address(api_client):
    for i in range(10):
        assert register(api_client, username=f"new{i}", password="x").status_code == 400
    assert register(api_client, username="late", password=STRONG).status_code == 429
    other_address = api_client.post(
        reverse("api-register"), {"username": "late", "password": STRONG}, format="json", REMOTE_ADDR="10.0.0.2"
    )
    assert other_address.status_code == 201
