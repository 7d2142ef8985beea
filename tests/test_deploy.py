"""The deployment files (Dockerfile, .dockerignore, docker-compose.yml, .env.example)
and structured logging.

No Docker engine runs here, so the files are checked for what can be known without
one: the compose file against the official Compose Specification schema, every
command a container runs against this project (it must exist and accept its
arguments), every file the image build copies, the user the processes run as, and
the build's `collectstatic` step by running it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib import import_module
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.procs import ROOT

SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
APP_SERVICES = ("migrate", "web", "worker", "bot")
WEB_COMMAND = [
    "daphne",
    "-b",
    "0.0.0.0",
    "-p",
    "8000",
    "--websocket-max-message-size",
    "66560",
    "chatproject.asgi:application",
]


# --- helpers --------------------------------------------------------------------


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def is_dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern decides; `!` re-includes; a pattern that
    matches a directory excludes everything under it."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in dockerignore_patterns():
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        globs = [pattern, pattern.removeprefix("**/")] if pattern.startswith("**/") else [pattern]
        for candidate in candidates:
            names = [candidate, *(candidate.split("/", k)[-1] for k in range(1, candidate.count("/") + 1))]
            targets = names if pattern.startswith("**/") else [candidate]
            if any(fnmatch.fnmatchcase(target, glob) for target in targets for glob in globs):
                ignored = not negate
                break
    return ignored


def env_example_names() -> set[str]:
    """Variables .env.example documents, set or shown commented out (`# NAME=value`)."""
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def as_argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def assert_runs_in_this_project(argv: list[str]) -> None:
    """The program exists in the image's Python environment, and what it is asked to run
    exists in this project: a registered manage.py command, the Celery app and
    subcommand with known options, daphne's options and ASGI application."""
    program, *args = argv
    if program == "python" and args[:1] == ["manage.py"]:
        from django.core.management import get_commands

        assert args[1] in get_commands(), f"`manage.py {args[1]}` is not a registered command"
        assert (ROOT / "manage.py").exists()
    elif program == "celery":
        from celery import Celery
        from celery.app.utils import find_app
        from celery.bin.celery import celery as celery_cli

        assert args[0] == "-A"
        assert isinstance(find_app(args[1]), Celery), f"-A {args[1]} does not name a Celery app"
        assert find_app(args[1]) is import_module("chatproject.celery").app
        subcommand = celery_cli.commands[args[2]]
        known = {opt for param in subcommand.params for opt in (*param.opts, *param.secondary_opts)}
        for option in (arg for arg in args[3:] if arg.startswith("-")):
            assert option in known, f"`celery {args[2]}` has no option {option}"
    elif program == "daphne":
        from daphne.cli import CommandLineInterface

        parsed = CommandLineInterface().parser.parse_args(args)
        module_name, _, attribute = parsed.application.partition(":")
        assert callable(getattr(import_module(module_name), attribute))
    else:
        raise AssertionError(f"unexpected program in a container command: {program}")
    # Every program is installed by requirements.txt into the image's environment.
    assert program == "python" or (Path(sys.executable).parent / program).exists()


# --- docker-compose.yml -----------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)

    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(load_compose()), key=str)

    assert not errors, "\n".join(f"{error.json_path}: {error.message}" for error in errors)


def test_the_schema_check_catches_a_mistake():
    schema = json.loads(SCHEMA.read_text())
    compose = load_compose()
    compose["services"]["web"]["heathcheck"] = compose["services"]["web"].pop("healthcheck")
    compose["services"]["worker"]["depends_on"] = {"db": {"condition": "service_ready"}}

    paths = {error.json_path for error in jsonschema.Draft7Validator(schema).iter_errors(compose)}

    assert paths == {"$.services.web", "$.services.worker.depends_on"}


def test_compose_runs_the_database_redis_and_each_process_as_its_own_service():
    assert set(load_compose()["services"]) == {"db", "redis", *APP_SERVICES}


def test_every_process_runs_from_the_one_image_built_from_this_dockerfile():
    services = load_compose()["services"]

    assert {services[name]["build"] for name in APP_SERVICES} == {"."}
    assert len({services[name]["image"] for name in APP_SERVICES}) == 1
    assert (ROOT / "Dockerfile").is_file()


def test_every_process_is_configured_from_the_env_file_and_the_bundled_services():
    services = load_compose()["services"]

    for name in APP_SERVICES:
        assert services[name]["env_file"] == ".env"
        environment = services[name]["environment"]
        assert "@db:5432/" in environment["DATABASE_URL"]
        assert environment["REDIS_URL"].startswith("redis://redis:6379/")


def test_database_and_redis_keep_their_data_in_named_volumes_and_report_health():
    compose = load_compose()
    for name, data_dir in (("db", "/var/lib/postgresql/data"), ("redis", "/data")):
        service = compose["services"][name]
        volume, _, mounted_at = service["volumes"][0].partition(":")
        assert volume in compose["volumes"]
        assert mounted_at == data_dir
        assert service["healthcheck"]["test"]


def test_migrations_run_once_before_any_process_starts():
    services = load_compose()["services"]

    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    for name in ("web", "worker", "bot"):
        assert services[name]["depends_on"] == {
            "db": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }


def test_each_service_runs_the_documented_process():
    services = load_compose()["services"]

    assert services["web"]["command"] == WEB_COMMAND
    assert services["worker"]["command"] == ["celery", "-A", "chatproject", "worker", "-l", "INFO"]
    assert services["bot"]["command"] == ["python", "manage.py", "runbot"]


def test_the_bot_starts_only_with_the_telegram_profile():
    # runbot refuses to start without TELEGRAM_BOT_TOKEN; without the profile Docker
    # would restart it forever on deployments that do without Telegram.
    assert load_compose()["services"]["bot"]["profiles"] == ["telegram"]
    assert "COMPOSE_PROFILES" in env_example_names()


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_container_command_exists_in_this_project(service):
    spec = load_compose()["services"][service]

    assert_runs_in_this_project(as_argv(spec["command"]))
    test = spec.get("healthcheck", {}).get("test")
    if test and test[0] == "CMD-SHELL":
        assert_runs_in_this_project(as_argv(test[1].replace("$$", "$")))


def test_every_variable_the_compose_file_interpolates_is_documented_in_env_example():
    text = (ROOT / "docker-compose.yml").read_text()
    # `$$` escapes a `$` meant for the container's shell, not for compose.
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))

    assert used
    assert used <= env_example_names(), used - env_example_names()


def test_every_setting_read_from_the_environment_is_documented_in_env_example():
    settings_source = (ROOT / "chatproject" / "settings.py").read_text()
    read = set(re.findall(r"env(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]*)\"", settings_source))

    assert {"SECRET_KEY", "DATABASE_URL", "LOG_FORMAT"} <= read
    missing = read - env_example_names()
    assert not missing, f"add these to .env.example: {sorted(missing)}"


@pytest.mark.django_db(transaction=True)
def test_the_web_health_check_reaches_healthz_with_an_allowed_host(live_server, settings):
    script = load_compose()["services"]["web"]["healthcheck"]["test"]
    assert script[:3] == ["CMD", "python", "-c"]
    probe = script[3].replace("http://127.0.0.1:8000/", f"{live_server.url}/")
    assert probe != script[3]
    # The first request imports every URL module (aiogram among them): slow on a busy
    # machine, and not what the probe's time-out is for.
    urllib.request.urlopen(f"{live_server.url}/healthz", timeout=120).close()
    settings.ALLOWED_HOSTS = ["chat.example.com", ".example.org"]

    def run_probe(allowed_hosts: str) -> int:
        env = {**os.environ, "ALLOWED_HOSTS": allowed_hosts}
        return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=60).returncode

    assert run_probe("chat.example.com,localhost") == 0
    assert run_probe(".example.org") == 0
    # Django answers 400 to a Host it does not serve: the probe must fail then.
    assert run_probe("elsewhere.example.net") != 0


# --- Dockerfile and .dockerignore -----------------------------------------------


def test_the_image_is_based_on_python_311_slim():
    assert dockerfile_instructions()[0] == ("FROM", "python:3.11-slim")


def test_every_file_the_image_copies_exists_and_is_in_the_build_context():
    copies = [arguments.split() for keyword, arguments in dockerfile_instructions() if keyword == "COPY"]
    assert copies
    for parts in copies:
        sources = [part for part in parts[:-1] if not part.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            if source != ".":
                assert not is_dockerignored(source), f"COPY {source}: excluded by .dockerignore"


def test_requirements_are_copied_before_they_are_installed():
    instructions = dockerfile_instructions()
    copied: set[str] = set()
    installs = 0
    for keyword, arguments in instructions:
        if keyword == "COPY":
            copied.update(part for part in arguments.split()[:-1] if not part.startswith("--"))
        for requirements in re.findall(r"pip install[^&]*?-r\s+(\S+)", arguments) if keyword == "RUN" else []:
            installs += 1
            assert requirements in copied, f"{requirements} is installed before it is copied"
            assert "==" in (ROOT / requirements).read_text(), f"{requirements} has no pinned versions"
    assert installs == 1


def test_the_image_runs_its_processes_as_a_non_root_user():
    instructions = dockerfile_instructions()
    users = [arguments.split(":")[0] for keyword, arguments in instructions if keyword == "USER"]
    created = [
        step.split()[-1]
        for keyword, arguments in instructions
        if keyword == "RUN"
        for step in arguments.split("&&")
        if step.split()[:1] in (["useradd"], ["adduser"])
    ]

    assert users, "the Dockerfile never switches user"
    assert users[-1] not in ("root", "0")
    assert users[-1] in created, f"USER {users[-1]} is not created by a RUN useradd"


def test_the_image_serves_hashed_static_files_collected_at_build_time():
    instructions = dockerfile_instructions()
    env = " ".join(arguments for keyword, arguments in instructions if keyword == "ENV")
    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")

    assert "STATIC_MANIFEST=true" in env
    assert "LOG_FORMAT=json" in env
    assert "manage.py collectstatic --noinput" in runs


def test_the_default_command_is_the_web_server():
    cmd = next(arguments for keyword, arguments in dockerfile_instructions() if keyword == "CMD")

    assert json.loads(cmd) == WEB_COMMAND


def test_dockerignore_keeps_the_code_and_leaves_out_local_state_and_secrets():
    for kept in ("manage.py", "requirements.txt", "chatproject/settings.py", "templates/base.html", "static"):
        assert not is_dockerignored(kept), kept
    for app in ("accounts", "messaging", "notifications"):
        assert not is_dockerignored(f"{app}/models.py"), app
    for dropped in (".env", ".venv/bin/python", ".git/HEAD", "db.sqlite3", "staticfiles/x.css", "a/__pycache__/b.pyc"):
        assert is_dockerignored(dropped), dropped


def test_collectstatic_with_the_manifest_storage_succeeds_as_in_the_image_build(tmp_path):
    # As the Dockerfile's build step, but into a temporary STATIC_ROOT.
    code = (
        "import django; django.setup();"
        "from django.test.utils import override_settings;"
        "from django.core.management import call_command;"
        f"override_settings(STATIC_ROOT={str(tmp_path)!r}).enable();"
        "call_command('collectstatic', '--noinput', verbosity=0)"
    )
    env = {
        key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL", "STATIC_MANIFEST")
    }
    env.update(SECRET_KEY="collectstatic-only", STATIC_MANIFEST="true", DJANGO_SETTINGS_MODULE="chatproject.settings")

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "staticfiles.json").read_text())["paths"]
    hashed = manifest["drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"]
    assert re.search(r"\.[0-9a-f]{12}\.js$", hashed)
    assert (tmp_path / f"{hashed}.gz").is_file()


# --- The client's address (throttling) -------------------------------------------


def web_commands() -> dict[str, list[str]]:
    cmd = next(arguments for keyword, arguments in dockerfile_instructions() if keyword == "CMD")
    return {"compose web": as_argv(load_compose()["services"]["web"]["command"]), "Dockerfile CMD": json.loads(cmd)}


def nginx_snippet() -> str:
    text = (ROOT / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "docs/operations.md shows one nginx configuration"
    return blocks[0]


@pytest.mark.parametrize("name", ["compose web", "Dockerfile CMD"])
def test_daphne_never_takes_the_client_address_from_forwarded_headers(name):
    """With --proxy-headers daphne makes the first X-Forwarded-For value, which the
    client writes, the request's address, and the login throttle counts by it."""
    from daphne.cli import CommandLineInterface

    argv = web_commands()[name]
    parsed = CommandLineInterface().parser.parse_args(argv[1:])

    assert argv[0] == "daphne"
    assert not parsed.proxy_headers
    assert not any(arg.startswith("--proxy-headers") for arg in argv)


def test_the_documented_proxy_replaces_x_forwarded_for_with_the_address_it_sees():
    directives = {
        tuple(line.split("#")[0].split()[1:3])
        for line in nginx_snippet().splitlines()
        if line.strip().startswith("proxy_set_header")
    }

    assert ("X-Forwarded-For", "$remote_addr;") in directives
    assert "$proxy_add_x_forwarded_for" not in nginx_snippet()
    # ... and the app is told about that one proxy.
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "`NUM_PROXIES=1`" in operations
    assert load_compose()["services"]["web"]["ports"] == ["${WEB_PUBLISH:-127.0.0.1:8000}:8000"]


def _login_status(base_url: str, forwarded_for: str) -> int:
    from tests.faults_support import http_json

    credentials = {"username": "alice", "password": "wrong"}
    return http_json(
        f"{base_url}/api/auth/token/", body=credentials, headers={"X-Forwarded-For": forwarded_for}, timeout=30
    )[0]


@pytest.mark.stack
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_forged_x_forwarded_for_does_not_escape_the_login_throttle_of_the_web_command():
    """The web command as compose runs it, directly reached (NUM_PROXIES=0) and behind
    the documented proxy (NUM_PROXIES=1, the proxy's address last): a client that
    writes a new address into X-Forwarded-For for every attempt is still throttled."""
    from tests.procs import BIN, DaphneServer, Process, require_stack, wait_healthy

    require_stack()
    servers = {}
    for num_proxies in ("0", "1"):
        server = DaphneServer(THROTTLE_RATES="login=3/min", NUM_PROXIES=num_proxies)
        argv = load_compose()["services"]["web"]["command"]
        server.args = [str(BIN / argv[0]), *argv[1:]]
        server.args[server.args.index("0.0.0.0")] = "127.0.0.1"
        server.args[server.args.index("8000")] = str(server.port)
        servers[num_proxies] = server
    try:
        for server in servers.values():
            Process.start(server)
        deadline = time.monotonic() + 120
        for server in servers.values():
            wait_healthy(server, server.url, deadline)

        direct = [_login_status(servers["0"].url, f"198.51.100.{i}") for i in range(5)]
        proxied = [_login_status(servers["1"].url, f"198.51.100.{i}, 203.0.113.7") for i in range(5)]
        another_client = _login_status(servers["1"].url, "198.51.100.1, 203.0.113.8")
    finally:
        for server in servers.values():
            server.stop()

    assert direct == [401, 401, 401, 429, 429]
    assert proxied == [401, 401, 401, 429, 429]
    assert another_client == 401


# --- Structured logs ------------------------------------------------------------


def _log_in_subprocess(**env: str) -> subprocess.CompletedProcess:
    code = (
        "import django, logging; django.setup();"
        "log = logging.getLogger('chat.test');"
        "log.info('hello %s', 'world', extra={'user_id': 7});"
        "\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('it broke')"
    )
    clean = {key: value for key, value in os.environ.items() if key != "LOG_FORMAT"}
    clean.update(env, SECRET_KEY="x" * 50, DJANGO_SETTINGS_MODULE="chatproject.settings")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)


def test_json_log_format_writes_one_json_object_per_line():
    result = _log_in_subprocess(LOG_FORMAT="json")

    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("INFO", "chat.test", "hello world"),
        ("ERROR", "chat.test", "it broke"),
    ]
    assert records[0]["user_id"] == 7
    assert records[0]["timestamp"].endswith("+00:00")
    assert "ZeroDivisionError" in records[1]["exc_info"]


def test_plain_log_format_is_the_default():
    result = _log_in_subprocess()

    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert " INFO chat.test " in first
    assert first.endswith("hello world")


def test_an_unknown_log_format_stops_start_up():
    result = _log_in_subprocess(LOG_FORMAT="xml")

    assert result.returncode != 0
    assert "LOG_FORMAT: expected plain or json" in result.stderr
