# One image for every process of the messenger: the web server (daphne), the Celery
# worker, the Telegram bot and the one-shot migrations. docker-compose.yml picks the
# command; the default is the web server.
#
#   docker build -t messenger .
FROM python:3.11-slim

# STATIC_MANIFEST: hashed, compressed file names made by `collectstatic` below, served
# by whitenoise with far-future cache headers (see STORAGES in chatproject/settings.py).
# LOG_FORMAT: one JSON object per log line, for the log collector.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=chatproject.settings \
    STATIC_MANIFEST=true \
    LOG_FORMAT=json

# The processes run as this user; the code stays owned by root, so they cannot change it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies first: this layer is rebuilt only when the pins change.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .

# Settings refuse to load without a SECRET_KEY outside DEBUG; collectstatic needs no
# real one, and this throwaway value exists only during this build step.
RUN SECRET_KEY=collectstatic-only-not-a-real-secret python manage.py collectstatic --noinput \
    && python -m compileall -q .

USER app

EXPOSE 8000

# No --proxy-headers: the client's address for throttling is the one the trusted proxy
# wrote into X-Forwarded-For (NUM_PROXIES), never a value the client chose.
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "--websocket-max-message-size", "66560", "chatproject.asgi:application"]
