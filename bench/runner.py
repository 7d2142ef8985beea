"""`python -m bench`: set up, run every system with one and two server processes,
check, print and write the results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import stack

RESULTS_DIR = Path(__file__).resolve().parent / "results"

FULL = {
    "users": 200,
    "rate": 200.0,
    "paced_seconds": 5.0,
    "burst": 20,
    "idle": 5000,
    "idle_seconds": 15.0,
    "history_seconds": 5.0,
    "history_workers": 8,
    "history_rate": 50.0,
}
QUICK = {
    "users": 20,
    "rate": 50.0,
    "paced_seconds": 2.0,
    "burst": 5,
    "idle": 100,
    "idle_seconds": 3.0,
    "history_seconds": 2.0,
    "history_workers": 2,
    "history_rate": 10.0,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the messenger against a Channels relay and a websockets+PostgreSQL relay.",
        epilog="Needs DATABASE_URL (PostgreSQL: a fresh bench_<name> database is created beside it) and REDIS_URL.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: few users, short phases")
    parser.add_argument("--users", type=int, help=f"chat users (default {FULL['users']})")
    parser.add_argument("--rate", type=float, help=f"paced phase, messages per second (default {FULL['rate']:.0f})")
    parser.add_argument("--paced-seconds", type=float, help=f"default {FULL['paced_seconds']:.0f}")
    parser.add_argument("--burst", type=int, help=f"messages per user, back to back (default {FULL['burst']})")
    parser.add_argument("--idle", type=int, help=f"idle connections to aim for (default {FULL['idle']})")
    parser.add_argument(
        "--idle-seconds", type=float, help=f"time for connecting them (default {FULL['idle_seconds']:.0f})"
    )
    parser.add_argument("--history-seconds", type=float, help="history under chat load; 0 skips it")
    parser.add_argument("--history-workers", type=int, help="concurrent history readers for the most pages/s")
    parser.add_argument(
        "--history-rate",
        type=float,
        help="readers scrolling per second (newest page and the one before), for the latency "
        f"(default {FULL['history_rate']:.0f})",
    )
    parser.add_argument("--extra-socket-every", type=int, default=4, help="every n-th user has a second socket")
    parser.add_argument(
        "--systems",
        default="project,channels-relay,ws-relay",
        help="comma-separated, of project, channels-relay, ws-relay",
    )
    parser.add_argument("--processes", default="1,2", help="server process counts to run, e.g. 1,2")
    parser.add_argument("--chat-rate-limit", default="100000/1", help="CHAT_RATE_LIMIT for the project's servers")
    parser.add_argument("--database", help="name of the benchmark's database (default bench_<name in DATABASE_URL>)")
    parser.add_argument("--keep-database", action="store_true", help="leave the benchmark's database for inspection")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the project's server in every phase",
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    args.processes = sorted({int(p) for p in args.processes.split(",")})
    if args.users < 4 or args.users % 2:
        parser.error("--users must be an even number, at least 4")
    return args


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def python_loop_ms(rounds: int = 5) -> float:
    """The fastest of `rounds` runs of a fixed pure-Python loop, in ms: how fast this
    host runs Python right now. Shared hosts vary (the same loop has taken 0.41 to
    0.72 s here minutes apart), so runs are compared by it and by the baselines."""
    best = float("inf")
    for _ in range(rounds):
        begun = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - begun)
    return round(best * 1000, 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    speed_at_start = python_loop_ms()
    open_files = raise_open_files_limit()
    setup = stack.prepare(args.database, args.chat_rate_limit)
    log(f"database {setup.database_name} created; Redis {setup.redis_url}")

    import django

    django.setup()
    from bench.procs import SYSTEMS
    from bench.scenario import run_system

    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")
    try:
        stack.migrate_and_create_table()
        chat_rows = stack.create_users("benchu", args.users)
        idle_rows = stack.create_users("benchidle", args.idle)
        log(f"migrated; {len(chat_rows)} chat users and {len(idle_rows)} idle users created")
        runs = []
        for system in args.systems:
            for processes in args.processes:
                runs.append(run_system(system, processes, args, chat_rows, idle_rows, log))
    finally:
        if not args.keep_database:
            from django.db import connections

            connections.close_all()
            stack.drop_database(os.environ["DATABASE_URL"], setup.database_name)

    results = build_results(args, started, runs, open_files)
    speed = {"start": speed_at_start, "end": python_loop_ms()}
    results["machine"]["python_loop_ms"] = speed
    results["notes"].append(
        f"Host speed: a fixed pure-Python loop took {speed['start']} ms before the run and {speed['end']} ms "
        "after it (less is faster); compare runs by it and by the baselines."
    )
    from bench.report import render

    table = render(results)
    results["table"] = table.splitlines()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    print(f"\nWritten: {path}")
    return 1 if any(r["system"] == "project" and not r["correct"] for r in runs) else 0


def build_results(args: argparse.Namespace, started: datetime, runs: list[dict], open_files: int) -> dict:
    options = {
        key: getattr(args, key)
        for key in (
            "quick",
            "users",
            "rate",
            "paced_seconds",
            "burst",
            "idle",
            "idle_seconds",
            "history_seconds",
            "history_workers",
            "history_rate",
            "extra_socket_every",
            "systems",
            "processes",
            "chat_rate_limit",
        )
    }
    notes = [
        "Ratios are project ÷ baseline: below 1× for msg/s and connections the project is slower; above 1× for "
        "latency, CPU and memory it costs more.",
        "Client and servers share the machine "
        f"({os.cpu_count()} CPUs); 'client CPU' near 1.0 core would mean the client, not the server, set the pace.",
    ]
    for run in runs:
        for name, phase in run["phases"].items():
            usage = phase.get("usage") if isinstance(phase, dict) else None
            if usage and usage["cpu_cores"].get("client", 0) > 0.9:
                notes.append(
                    f"WARNING: client CPU {usage['cpu_cores']['client']:.2f} cores in {run['label']} {name}: "
                    "the client may have set the pace."
                )
    for run in runs:
        paced = run["phases"].get("paced", {})
        if (paced.get("delivered_per_second") or 0) < 0.9 * args.rate:
            notes.append(
                f"{run['label']} did not keep up with {args.rate:.0f} msg/s (delivered "
                f"{paced.get('delivered_per_second')} msg/s): its paced latencies are mostly queueing."
            )
    for run in runs:
        c = run["correctness"]
        run["correct"] = not (c["lost"] or c["duplicated"] or c["out_of_order"] or c["detail"]["unacked"])
    project_bad = [r["label"] for r in runs if r["system"] == "project" and not r["correct"]]
    baseline_bad = [r["label"] for r in runs if r["system"] != "project" and not r["correct"]]
    if project_bad:
        notes.append("Correctness: FAILED in " + ", ".join(project_bad) + " (see runs[].correctness in the JSON).")
    elif any(r["system"] == "project" for r in runs):
        notes.append("Correctness: the project lost, duplicated and reordered nothing.")
    if baseline_bad:
        notes.append(
            "Baselines with lost/duplicated/reordered messages: "
            + ", ".join(baseline_bad)
            + " (the bare relay publishes after its INSERT with nothing ordering concurrent senders of one "
            "conversation, so ids can arrive out of order; this does not fail the benchmark)."
        )
    sockets = runs[0]["sockets"] if runs else 0
    return {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "options": options,
        "sockets": sockets,
        "git": _git_state(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
            "open_files_limit": open_files,
        },
        "runs": runs,
        "notes": notes,
    }


def _git_state() -> dict:
    """Which code was measured: the commit, and whether the working tree differed."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "modified_files": git("status", "--porcelain", "--untracked-files=no").splitlines(),
    }
