"""Settings for the messenger, read from the environment (and `.env`).

One module for every deployment: the embedded defaults (SQLite, in-memory channel
layer, local-memory cache, in-process tasks) apply when `DATABASE_URL` / `REDIS_URL`
are unset; PostgreSQL and Redis take over when they are set. The variables are
documented in README.md and `.env.example`.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Variables already in the environment win over the file. ENV_FILE names another file
# (tests point it at /dev/null to see the pure defaults).
ENV_FILE = Path(env.str("ENV_FILE", default=str(BASE_DIR / ".env")))
if ENV_FILE.is_file():
    environ.Env.read_env(ENV_FILE, overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
HTTPS = env.bool("HTTPS", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment or in .env "
            "(`make run` writes a random one), or set DEBUG=true for local development."
        )
    # Only reachable with DEBUG=true: a fixed key so that sessions survive restarts.
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "daphne",
    # django.contrib.admin, with the login page throttled like the others.
    "chatproject.admin_site.MessengerAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "accounts",
    "messaging",
    "notifications",
    "chatproject",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "chatproject.static_files.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatproject.urls"
ASGI_APPLICATION = "chatproject.asgi.application"
WSGI_APPLICATION = "chatproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------


DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Under ASGI every HTTP request runs on a thread of its own, so a persistent
    # connection (CONN_MAX_AGE) would be a new PostgreSQL connection per request. A
    # psycopg pool per process instead; a connection is checked when taken unless it
    # was handed out in the last second (chatproject.db), so one that died with a
    # PostgreSQL restart is replaced, not handed out.
    DATABASE_POOL_SIZE = env.int("DATABASE_POOL_SIZE", default=20)
    if DATABASE_POOL_SIZE:
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(2, DATABASE_POOL_SIZE),
            "max_size": DATABASE_POOL_SIZE,
            # How long a request waits for a connection; also how soon it fails while
            # PostgreSQL is unreachable.
            "timeout": 5,
        }
    else:
        DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a write is in progress; a busy timeout turns
    # "database is locked" into a short wait.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# --- Redis: channel layer, cache, presence, Celery broker ------------------------

REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "chat",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
                "CONNECTION_POOL_KWARGS": {"max_connections": 100, "retry_on_timeout": True},
            },
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis' pub/sub layer: each group message is one PUBLISH, and no
            # per-channel capacity silently drops bursts; a client that was not
            # connected catches up with `sync` from PostgreSQL, the source of truth.
            # The subclass publishes a batch's events in one pipeline.
            "BACKEND": "chatproject.channel_layer.ChatChannelLayer",
            # Redis pub/sub channels are shared by every database number of a server:
            # processes that must not hear each other (parallel test runs, the
            # benchmark) set their own prefix.
            "CONFIG": {"hosts": [REDIS_URL], "prefix": env.str("CHANNEL_LAYER_PREFIX", default="chat.layer")},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# --- Celery ---------------------------------------------------------------------

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = False
# A task is acknowledged once it has run, and a pool child killed mid-task has its task
# requeued at once rather than acknowledged: a notification it held is sent by the rerun.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# A task that a killed worker held is handed out again after this long. It must be
# longer than any countdown we schedule, or delayed tasks would be delivered twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=300)}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Auth -----------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Django's password hashers, always: nothing read from the environment can weaken them.
# Only the test suite's settings (chatproject/settings_test.py) hash faster.

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- REST API -------------------------------------------------------------------


def _throttle_rates(raw: str) -> dict[str, str]:
    rates = {"login": "10/min", "register": "10/hour"}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        scope, _, rate = item.partition("=")
        if not rate:
            raise ImproperlyConfigured(f"THROTTLE_RATES: expected scope=rate, got {item!r}")
        rates[scope.strip()] = rate.strip()
    return rates


REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # DRF's, plus a JSON 413 for a body over DATA_UPLOAD_MAX_MEMORY_SIZE.
    "EXCEPTION_HANDLER": "chatproject.api_errors.api_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "accounts.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": _throttle_rates(env.str("THROTTLE_RATES", default="")),
    # Client address for throttling: the number of trusted proxies in front of us.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=14)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    # Tokens carry a hash of the password hash: a new password (the admin's, or
    # `manage.py changepassword`) refuses every token issued before it, REST and
    # WebSocket alike (messaging.ws_auth checks it too).
    "CHECK_REVOKE_TOKEN": True,
    "TOKEN_REFRESH_SERIALIZER": "accounts.serializers.RevocableTokenRefreshSerializer",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Messenger API",
    "DESCRIPTION": "REST API of the messenger. Real-time delivery is on the WebSocket at /ws/chat/.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Messaging ------------------------------------------------------------------


def _rate(raw: str, name: str) -> tuple[int, int]:
    count, _, seconds = raw.partition("/")
    try:
        return int(count), int(seconds or 1)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected COUNT/SECONDS, got {raw!r}") from None


CHAT_RATE_LIMIT = _rate(env.str("CHAT_RATE_LIMIT", default="30/10"), "CHAT_RATE_LIMIT")
PRESENCE_TIMEOUT_SECONDS = env.int("PRESENCE_TIMEOUT_SECONDS", default=60)
# Open tabs and devices one user may have at once; more are refused (close code 4429).
MAX_CONNECTIONS_PER_USER = env.int("MAX_CONNECTIONS_PER_USER", default=20)
# A client that stops reading is disconnected once this much waits to be written to
# it (it catches up with `sync` when it reconnects); 0 turns the limit off.
WS_SEND_BUFFER_LIMIT_BYTES = env.int("WS_SEND_BUFFER_LIMIT_BYTES", default=1024 * 1024)
NOTIFY_DELAY_SECONDS = env.int("NOTIFY_DELAY_SECONDS", default=10)

# --- Telegram -------------------------------------------------------------------

TELEGRAM_BOT_TOKEN = env.str("TELEGRAM_BOT_TOKEN", default="")
TELEGRAM_BOT_USERNAME = env.str("TELEGRAM_BOT_USERNAME", default="")
TELEGRAM_API_BASE = env.str("TELEGRAM_API_BASE", default="")
# Seconds one Bot API call may take. A notification whose worker died during its call
# is sent again once that call has surely ended (notifications.services.sending_lease).
TELEGRAM_REQUEST_TIMEOUT = env.int("TELEGRAM_REQUEST_TIMEOUT", default=15)

# --- Internationalization, static files -----------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Hashed, compressed, cache-forever names need `collectstatic`: the Docker image
        # runs it and sets STATIC_MANIFEST=true. Elsewhere files are served as they are.
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env.bool("STATIC_MANIFEST", default=False)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not env.bool("STATIC_MANIFEST", default=False)

# --- Security -------------------------------------------------------------------

CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# Content-Security-Policy on every response (django-csp): defence in depth against
# stored XSS. Pages, admin and the API docs have no inline script, style or event
# handler, so nothing here is relaxed with 'unsafe-inline'. 'self' covers the same
# origin's ws:/wss: in current browsers; the site's own WebSocket origin is named too
# for older browsers, without allowing WebSockets to any other host.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'", SITE_URL.replace("http", "ws", 1)],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Logging --------------------------------------------------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
# plain: readable lines for a terminal; json: one JSON object per line for a log
# collector (the Docker image sets it), with `extra=` fields and tracebacks inside.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT: expected plain or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["levelname", "name", "process", "message"],
            "rename_fields": {"levelname": "level", "name": "logger"},
            # ISO 8601 in UTC, under "timestamp".
            "timestamp": True,
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "aiogram": {"level": "INFO"},
    },
}
# Celery would otherwise replace the root handler with its own plain format; this way
# the worker logs through LOGGING like every other process.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
