"""The REST API's errors are JSON in the contract's shape, also for a body too large for
Django to read (tests/test_security.py sends megabytes to a real server)."""

import json

import pytest
from django.conf import settings
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from messaging.models import Message

pytestmark = pytest.mark.django_db


def _over_the_limit() -> str:
    return "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)


@pytest.mark.parametrize(
    ("name", "args", "field"),
    [("api-messages", ["bob"], "body"), ("api-token", [], "password"), ("api-register", [], "password")],
)
def test_a_body_over_the_upload_limit_is_a_json_413(alice, bob, name, args, field):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(alice)}")
    data = {"username": "newcomer", field: _over_the_limit()}
    response = client.post(reverse(name, args=args), json.dumps(data), content_type="application/json")
    assert response.status_code == 413, response.content[:200]
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": f"The request body is too large (at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes)."
    }
    assert not Message.objects.exists() and not User.objects.filter(username="newcomer").exists()


def test_other_errors_keep_drfs_shape(alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(alice)}")
    response = client.post(reverse("api-messages", args=["nobody"]), {"body": "hi"}, format="json")
    assert response.status_code == 404 and set(response.json()) == {"detail"}
    response = client.post(reverse("api-messages", args=["alice"]), {}, format="json")
    assert response.status_code == 400 and response.json() == {"body": ["This field is required."]}
