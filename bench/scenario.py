"""One run: a system (the project or a baseline) on one or more server processes,
through connect, warm-up, paced, burst, history (the project only) and idle phases,
then the correctness checks against what the client saw and what PostgreSQL holds."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from argparse import Namespace
from collections.abc import Callable

from websockets.protocol import State

from bench import stack
from bench.checks import check_delivery
from bench.client import ChatClient, User, close_idle, idle_connections
from bench.procs import CHANNELS_RELAY, PROJECT, make_server, running_together
from bench.profiling import Profiler
from bench.sysstat import Usage, UsageMeter, process_cpu_seconds, process_rss_bytes

IDLE_CONCURRENCY = 64


def build_users(rows: list[tuple[int, str]], tokens: list[str]) -> list[User]:
    """Users with three peers each: the neighbours on a ring and the one opposite, so
    that conversations overlap (each user is in three) and both sides send."""
    users = [User(i, pk, name, token) for i, ((pk, name), token) in enumerate(zip(rows, tokens, strict=True))]
    n = len(users)
    for user in users:
        user.peers = [users[(user.index + 1) % n], users[(user.index - 1) % n], users[(user.index + n // 2) % n]]
    return users


def run_system(
    system: str,
    processes: int,
    args: Namespace,
    chat_rows: list[tuple[int, str]],
    idle_rows: list[tuple[int, str]],
    log: Callable[[str], None],
) -> dict:
    tag = f"{system}-{processes}p-{secrets.token_hex(3)}"
    label = f"{system} × {processes}"
    env = {
        # Our own pub/sub namespace: nobody else's processes hear the benchmark.
        "CHANNEL_LAYER_PREFIX": f"bench.{tag}",
        "CHAT_RATE_LIMIT": args.chat_rate_limit,
    }
    with_idle = processes == 1 and args.idle > 0
    users = build_users(chat_rows, stack.mint_tokens([pk for pk, _ in chat_rows]))
    idle_users = build_users(idle_rows, stack.mint_tokens([pk for pk, _ in idle_rows])) if with_idle else []
    servers = [make_server(system, env, stack.RELAY_TABLE) for _ in range(processes)]
    log(f"{label}: starting {processes} server process(es)")
    started = time.perf_counter()
    with running_together(servers):
        log(f"{label}: servers up in {time.perf_counter() - started:.1f} s (pids {[s.pid for s in servers]})")
        client = ChatClient(tag)
        phases = asyncio.run(drive(system, servers, client, users, idle_users, args, label, log))
        log(f"{label}: stopping the servers")
    stored = None if system == CHANNELS_RELAY else stack.stored_client_ids(system, tag)
    correctness = check_delivery(client, stored)
    log(
        f"{label}: lost {correctness['lost']}, duplicated {correctness['duplicated']}, "
        f"out of order {correctness['out_of_order']} ({correctness['acked']}/{correctness['sent']} acked)"
    )
    return {
        "system": system,
        "processes": processes,
        "label": label,
        "run_tag": tag,
        "sockets": len(client.sockets),
        "load_average_before": os.getloadavg(),
        "server_logs": [str(s.log_path) for s in servers],
        "phases": phases,
        "correctness": correctness,
    }


async def drive(
    system: str,
    servers: list,
    client: ChatClient,
    users: list[User],
    idle_users: list[User],
    args: Namespace,
    label: str,
    log: Callable[[str], None],
) -> dict:
    from django.conf import settings

    pids = {f"server{i}": s.pid for i, s in enumerate(servers)}
    # PostgreSQL backends of the benchmark's database, and the (shared) Redis server.
    groups = {"postgres": f" {settings.DATABASES['default']['NAME']} ", "redis": "redis-server"}
    ws_urls = [s.ws_url for s in servers]
    phases: dict = {}

    started = time.perf_counter()
    await client.connect_users(users, ws_urls, args.extra_socket_every)
    phases["connect"] = {"sockets": len(client.sockets), "seconds": round(time.perf_counter() - started, 3)}
    phases["warmup"] = await client.warmup()
    await asyncio.to_thread(stack.analyze)
    phases["warmup"]["settle_seconds"] = await settle(pids)
    log(f"{label}: {len(client.sockets)} sockets connected, warm-up {phases['warmup']}")

    # Idle capacity first, on a warmed-up process whose chat sockets are open but
    # quiet: measured later, the memory freed by the chat phases would be reused and
    # the RSS growth per connection understated.
    if idle_users:
        rss_before = process_rss_bytes(servers[0].pid)
        profiler = Profiler(servers[0].pid, f"{client.run_tag}-idle") if args.profile and system == PROJECT else None
        if profiler:
            profiler.start()
        with UsageMeter(pids, groups) as meter:
            connections, idle = await idle_connections(
                ws_urls[0],
                idle_users,
                args.idle_seconds,
                IDLE_CONCURRENCY,
                on_progress=lambda n: log(f"{label}: {n} idle connections"),
            )
        if profiler:
            idle["profile"] = profiler.stop()
        await asyncio.sleep(1)
        rss_after = process_rss_bytes(servers[0].pid)
        alive = sum(1 for ws in connections if ws.state is State.OPEN)
        idle.update(
            {
                "alive_after_1s": alive,
                "rss_before_mb": round(rss_before / 2**20, 1),
                "rss_after_mb": round(rss_after / 2**20, 1),
                "bytes_per_connection": round((rss_after - rss_before) / len(connections)) if connections else None,
                "usage": meter.usage.as_dict(),
                "server_cpu_ms_per_connection": _cpu_ms_per_message(meter.usage, len(connections)),
            }
        )
        phases["idle"] = idle
        log(f"{label}: idle {idle['connections']} connections, {idle['connections_per_second']}/s")
        await close_idle(connections)
        idle["settle_seconds_after"] = await settle(pids)

    profiler = Profiler(servers[0].pid, f"{client.run_tag}-paced") if args.profile and system == PROJECT else None
    if profiler:
        profiler.start()
    with UsageMeter(pids, groups) as meter:
        phases["paced"] = await client.paced("paced", args.rate, args.paced_seconds)
    phases["paced"]["usage"] = meter.usage.as_dict()
    if profiler:
        phases["paced"]["profile"] = profiler.stop()
    phases["paced"]["server_cpu_ms_per_message"] = _cpu_ms_per_message(meter.usage, phases["paced"]["messages"])
    log(f"{label}: paced {_brief(phases['paced'])}")
    phases["paced"]["settle_seconds_after"] = await settle(pids)

    profiler = Profiler(servers[0].pid, f"{client.run_tag}-burst") if args.profile and system == PROJECT else None
    if profiler:
        profiler.start()
    with UsageMeter(pids, groups) as meter:
        phases["burst"] = await client.burst("burst", args.burst)
    phases["burst"]["usage"] = meter.usage.as_dict()
    phases["burst"]["server_cpu_ms_per_message"] = _cpu_ms_per_message(meter.usage, phases["burst"]["messages"])
    if profiler:
        phases["burst"]["profile"] = profiler.stop()
    log(f"{label}: burst {phases['burst']['delivered_per_second']} msg/s, complete {phases['burst']['complete']}")
    phases["burst"]["settle_seconds_after"] = await settle(pids)

    if system == PROJECT and args.history_seconds > 0:

        def pick(rnd):
            user = rnd.choice(users)
            return user, rnd.choice(user.peers)

        urls = [s.url for s in servers]
        # Latency at a reader load (open loop), then the most pages/s (closed loop),
        # each while the paced chat runs.
        for key, rate in (("history", args.history_rate), ("history_max", None)):
            profiler = Profiler(servers[0].pid, f"{client.run_tag}-{key}") if args.profile else None
            if profiler:
                profiler.start()
            with UsageMeter(pids, groups) as meter:
                chat, history = await asyncio.gather(
                    client.paced(key, args.rate, args.history_seconds),
                    client.history(urls, args.history_seconds, args.history_workers, pick, rate=rate),
                )
            phases[key] = {**history, "chat_during": chat, "usage": meter.usage.as_dict()}
            if profiler:
                phases[key]["profile"] = profiler.stop()
            log(f"{label}: {key} {history['pages_per_second']} pages/s, p99 {history['latency']['p99_ms']} ms")
            phases[key]["settle_seconds_after"] = await settle(pids)

    await client.close()
    log(f"{label}: chat sockets closed")

    return phases


async def settle(pids: dict[str, int], quiet_cores: float = 0.15, limit: float = 30) -> float:
    """Wait until the servers are (nearly) idle, so that one phase's backlog (e.g. the
    disconnects of thousands of idle sockets) is not measured in the next. Returns the
    seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
        await asyncio.sleep(0.5)
        busy = max((process_cpu_seconds(pid) - before[name]) / 0.5 for name, pid in pids.items())
        if busy < quiet_cores:
            break
    return round(time.perf_counter() - started, 1)


def _cpu_ms_per_message(usage: Usage, messages: int) -> float | None:
    """CPU of all server processes per message sent (or connection opened): robust to
    a busy machine, where rates and latencies are not."""
    cores = sum(v for k, v in usage.processes.items() if k.startswith("server"))
    return round(cores * usage.wall_seconds * 1000 / messages, 2) if messages else None


def _brief(phase: dict) -> str:
    latency = phase["latency"]
    return (
        f"{phase['achieved_send_rate']} msg/s sent, p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms, "
        f"complete {phase['complete']}"
    )
