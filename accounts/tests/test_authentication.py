"""Bearer tokens on the REST API (accounts.authentication): the user is read in one
lean query, and every refusal of simplejwt's is kept."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework_simplejwt.tokens import AccessToken

from accounts.authentication import JWTAuthentication
from accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def bearer(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_the_user_is_read_in_one_query_and_the_fields_it_did_not_read_load_when_used():
    user = UserFactory(username="alice", email="alice@example.org")
    token = AccessToken.for_user(user)
    with CaptureQueriesContext(connection) as queries:
        loaded, _ = JWTAuthentication().authenticate(_request(f"Bearer {token}"))
    assert len(queries) == 1
    assert (loaded.pk, loaded.username, loaded.is_active) == (user.pk, "alice", True)
    assert loaded.last_seen == user.last_seen
    assert loaded.email == "alice@example.org"  # deferred, read on first use
    me = bearer(token).get(reverse("api-me"))
    assert me.status_code == 200 and me.json()["username"] == "alice"


# What makes a signed token unusable, and the code it is refused with.
user_changes = pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda user: UserFactory._meta.model.objects.filter(pk=user.pk).update(is_active=False), "user_inactive"),
        (lambda user: user.delete(), "user_not_found"),
        (lambda user: (user.set_password("a-brand-new-password-7"), user.save()), "password_changed"),
    ],
    ids=["inactive", "deleted", "new password"],
)


@user_changes
def test_a_token_is_refused_once_its_user_cannot_use_it(change, code):
    user = UserFactory(username="alice")
    client = bearer(AccessToken.for_user(user))
    assert client.get(reverse("api-conversations")).status_code == 200
    change(user)
    refused = client.get(reverse("api-conversations"))
    assert refused.status_code == 401 and refused.json()["code"] == code


@user_changes
def test_a_view_that_loads_the_user_itself_gets_the_same_refusals(change, code):
    """`load_authenticated_user` (the history view's) replaces the read, not the checks."""
    user = UserFactory(username="alice")
    UserFactory(username="bob")
    client = bearer(AccessToken.for_user(user))
    url = reverse("api-messages", args=["bob"])
    assert client.get(url).status_code == 200
    change(user)
    refused = client.get(url)
    assert refused.status_code == 401 and refused.json()["code"] == code


@pytest.mark.parametrize("user_id", ["not-a-number", None])
def test_a_signed_token_without_a_usable_user_id_is_refused(user_id):
    token = AccessToken.for_user(UserFactory(username="alice"))
    token["user_id"] = user_id
    refused = bearer(token).get(reverse("api-conversations"))
    assert refused.status_code == 401 and refused.json()["code"] == "token_not_valid"


def _request(authorization: str):
    return APIRequestFactory().get("/", HTTP_AUTHORIZATION=authorization)
