"""Settings of the test suite and of the server processes it starts: the project's
settings (`chatproject.settings`, read from the environment as everywhere else) with a
fast password hasher, because hashing cost is not what the tests measure.

Nothing in production names this module (manage.py, the ASGI and Celery entry points
and the Docker image all use `chatproject.settings`), and nothing read from the
environment can switch `chatproject.settings` itself to a fast hasher.
"""

from django.conf import global_settings

from chatproject.settings import *  # noqa: F403

# MD5 hashes what is stored; Django's own hashers after it still verify what a process
# on the production settings stored.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *global_settings.PASSWORD_HASHERS]
