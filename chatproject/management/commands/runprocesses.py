"""Start every process the configured mode needs, in the foreground (`make run`).

- always: the web server (daphne's `runserver`: HTTP and WebSocket);
- with `REDIS_URL`: a Celery worker (without Redis, tasks run in the web process);
- with `TELEGRAM_BOT_TOKEN`: the Telegram bot (`runbot`).

Ctrl+C stops them all; if one exits, the others are stopped too.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the web server, and the Celery worker and Telegram bot when configured."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", default="8000")

    def handle(self, *args, host: str, port: str, **options) -> None:
        python = sys.executable
        celery = str(Path(python).parent / "celery")
        commands = {"web": [python, "manage.py", "runserver", f"{host}:{port}"]}
        if settings.REDIS_URL:
            commands["worker"] = [celery, "-A", "chatproject", "worker", "-l", "INFO", "--concurrency", "2"]
        else:
            self.stdout.write("REDIS_URL is not set: embedded mode, tasks run inside the web process.")
        if settings.TELEGRAM_BOT_TOKEN:
            commands["bot"] = [python, "manage.py", "runbot"]
        else:
            self.stdout.write("TELEGRAM_BOT_TOKEN is not set: the Telegram bot is not started.")

        processes = {name: subprocess.Popen(cmd) for name, cmd in commands.items()}
        self.stdout.write(f"Serving on http://{host}:{port}/ ({', '.join(processes)}); Ctrl+C stops.")

        def stop(*_args) -> None:
            for process in processes.values():
                if process.poll() is None:
                    process.terminate()

        signal.signal(signal.SIGTERM, stop)
        try:
            while all(process.poll() is None for process in processes.values()):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            stop()
            for process in processes.values():
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
        exited = {name: p.returncode for name, p in processes.items() if p.returncode not in (0, -15, None)}
        if exited:
            self.stderr.write(f"Stopped because a process failed: {exited}")
            sys.exit(1)
