import os
import subprocess
import sys

import pytest
from django.urls import reverse

from tests.procs import ROOT

pytestmark = pytest.mark.django_db


def test_healthz_is_ok_when_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_healthz_is_503_when_the_database_fails(client, monkeypatch):
    from chatproject import health

    monkeypatch.setattr(health, "_database_ok", lambda: False)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] is False


def test_openapi_schema_describes_the_api(client):
    response = client.get(reverse("api-schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/api/auth/register/", "/api/auth/token/", "/api/me/", "/api/users/"):
        assert path in paths


def test_swagger_ui_is_served_without_a_cdn(client):
    response = client.get(reverse("api-docs"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "cdn" not in html.lower()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js").status_code == 200


def _settings_in_subprocess(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "REDIS_URL", "DATABASE_URL"}}
    clean.update(env, DJANGO_SETTINGS_MODULE="chatproject.settings", ENV_FILE="/dev/null")
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings; {code}"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_missing_secret_key_stops_start_up_outside_debug(tmp_path):
    result = _settings_in_subprocess("print('started')", DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_embedded_defaults_without_redis_and_database_urls():
    result = _settings_in_subprocess(
        "print(settings.DATABASES['default']['ENGINE'], settings.CHANNEL_LAYERS['default']['BACKEND'],"
        " settings.CACHES['default']['BACKEND'], settings.CELERY_TASK_ALWAYS_EAGER)",
        SECRET_KEY="x" * 50,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "channels.layers.InMemoryChannelLayer",
        "django.core.cache.backends.locmem.LocMemCache",
        "True",
    ]


def test_postgres_and_redis_when_their_urls_are_set():
    result = _settings_in_subprocess(
        "print(settings.DATABASES['default']['ENGINE'], settings.CHANNEL_LAYERS['default']['BACKEND'],"
        " settings.CACHES['default']['BACKEND'], settings.CELERY_TASK_ALWAYS_EAGER, settings.CELERY_BROKER_URL)",
        SECRET_KEY="x" * 50,
        DATABASE_URL="postgres://root@127.0.0.1:5432/test",
        REDIS_URL="redis://127.0.0.1:6379/3",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "chatproject.channel_layer.ChatChannelLayer",
        "django_redis.cache.RedisCache",
        "False",
        "redis://127.0.0.1:6379/3",
    ]


def test_throttle_rates_come_from_the_environment():
    result = _settings_in_subprocess(
        "print(settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'])",
        SECRET_KEY="x" * 50,
        THROTTLE_RATES="login=3/min, register=1/day",
    )
    assert result.returncode == 0, result.stderr
    assert "'login': '3/min'" in result.stdout and "'register': '1/day'" in result.stdout


def test_production_settings_hash_passwords_with_django_s_hasher_whatever_the_environment_says():
    # FAST_PASSWORD_HASHER once switched these settings to MD5; nothing read from the
    # environment may weaken password hashing now, with DEBUG or without.
    code = "from django.contrib.auth.hashers import make_password; print(make_password('x').split('$')[0])"
    for debug in ("false", "true"):
        result = _settings_in_subprocess(code, SECRET_KEY="x" * 50, DEBUG=debug, FAST_PASSWORD_HASHER="true")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["pbkdf2_sha256"]


def test_only_the_test_settings_hash_fast_and_they_still_verify_django_s_hashes(settings):
    from django.contrib.auth.hashers import check_password, make_password
    from django.test.utils import override_settings

    assert settings.SETTINGS_MODULE == "chatproject.settings_test"
    assert make_password("x").startswith("md5$")
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"]):
        stored_in_production = make_password("x")
    assert check_password("x", stored_in_production)
    for entry_point in ("manage.py", "chatproject/asgi.py", "chatproject/celery.py", "chatproject/wsgi.py"):
        source = (ROOT / entry_point).read_text()
        assert '"chatproject.settings"' in source and "settings_test" not in source, entry_point
