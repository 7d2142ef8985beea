"""The printed table: the project's figures beside both baselines, as ratios to each,
and the scale-out from one server process to two."""

from __future__ import annotations

from collections.abc import Callable

from bench.procs import CHANNELS_RELAY, PROJECT, SYSTEMS, WS_RELAY

# A figure: label, how to read it from a run, whether higher is better, format.
Figure = tuple[str, Callable[[dict], float | None], bool, str]


def _get(*path: str) -> Callable[[dict], float | None]:
    def read(run: dict) -> float | None:
        value = run
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    return read


def _kib_per_connection(run: dict) -> float | None:
    value = _get("phases", "idle", "bytes_per_connection")(run)
    return None if value is None else value / 1024


FIGURES: list[Figure] = [
    ("paced: sent msg/s", _get("phases", "paced", "achieved_send_rate"), True, "{:.0f}"),
    ("paced: delivered msg/s", _get("phases", "paced", "delivered_per_second"), True, "{:.0f}"),
    ("paced: latency p50 (ms)", _get("phases", "paced", "latency", "p50_ms"), False, "{:.1f}"),
    ("paced: latency p95 (ms)", _get("phases", "paced", "latency", "p95_ms"), False, "{:.1f}"),
    ("paced: latency p99 (ms)", _get("phases", "paced", "latency", "p99_ms"), False, "{:.1f}"),
    ("paced: ack p99 (ms)", _get("phases", "paced", "ack_latency", "p99_ms"), False, "{:.1f}"),
    ("paced: server CPU (cores)", _get("phases", "paced", "usage", "cpu_cores", "server0"), False, "{:.2f}"),
    ("paced: server CPU ms/message", _get("phases", "paced", "server_cpu_ms_per_message"), False, "{:.2f}"),
    ("paced: postgres CPU (cores)", _get("phases", "paced", "usage", "cpu_cores", "postgres"), False, "{:.2f}"),
    ("paced: machine busy (cores)", _get("phases", "paced", "usage", "machine_cores_busy"), False, "{:.2f}"),
    ("burst: delivered msg/s", _get("phases", "burst", "delivered_per_second"), True, "{:.0f}"),
    ("burst: seconds", _get("phases", "burst", "seconds"), False, "{:.2f}"),
    ("burst: server CPU (cores)", _get("phases", "burst", "usage", "cpu_cores", "server0"), False, "{:.2f}"),
    ("burst: server CPU ms/message", _get("phases", "burst", "server_cpu_ms_per_message"), False, "{:.2f}"),
    ("burst: client CPU (cores)", _get("phases", "burst", "usage", "cpu_cores", "client"), False, "{:.2f}"),
    ("burst: postgres CPU (cores)", _get("phases", "burst", "usage", "cpu_cores", "postgres"), False, "{:.2f}"),
    ("burst: redis CPU (cores)", _get("phases", "burst", "usage", "cpu_cores", "redis"), False, "{:.2f}"),
    ("burst: machine busy (cores)", _get("phases", "burst", "usage", "machine_cores_busy"), False, "{:.2f}"),
    ("idle: connections", _get("phases", "idle", "connections"), True, "{:.0f}"),
    ("idle: connections/s", _get("phases", "idle", "connections_per_second"), True, "{:.0f}"),
    ("idle: KiB per connection", _kib_per_connection, False, "{:.1f}"),
    ("idle: server CPU ms/connection", _get("phases", "idle", "server_cpu_ms_per_connection"), False, "{:.2f}"),
    ("history: pages/s at the reader rate", _get("phases", "history", "pages_per_second"), True, "{:.0f}"),
    ("history: p50 (ms)", _get("phases", "history", "latency", "p50_ms"), False, "{:.1f}"),
    ("history: p99 (ms)", _get("phases", "history", "latency", "p99_ms"), False, "{:.1f}"),
    (
        "history: chat p99 meanwhile (ms)",
        _get("phases", "history", "chat_during", "latency", "p99_ms"),
        False,
        "{:.1f}",
    ),
    ("history max: pages/s", _get("phases", "history_max", "pages_per_second"), True, "{:.0f}"),
    ("history max: p99 (ms)", _get("phases", "history_max", "latency", "p99_ms"), False, "{:.1f}"),
    ("lost", _get("correctness", "lost"), False, "{:.0f}"),
    ("duplicated", _get("correctness", "duplicated"), False, "{:.0f}"),
    ("out of order", _get("correctness", "out_of_order"), False, "{:.0f}"),
]

SHORT = {PROJECT: "project", CHANNELS_RELAY: "channels relay", WS_RELAY: "ws+pg relay"}


def _fmt(value: float | None, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


def _ratio(project: float | None, baseline: float | None) -> str:
    if project is None or baseline in (None, 0):
        return "—"
    return f"{project / baseline:.2f}×"


def find(runs: list[dict], system: str, processes: int) -> dict | None:
    return next((r for r in runs if r["system"] == system and r["processes"] == processes), None)


def render(results: dict) -> str:
    runs = results["runs"]
    options = results["options"]
    lines: list[str] = []
    one = {system: find(runs, system, 1) for system in SYSTEMS}
    columns = [s for s in SYSTEMS if one[s] is not None]
    ratio_columns = [s for s in (CHANNELS_RELAY, WS_RELAY) if one.get(PROJECT) and one.get(s)]
    lines.append(
        f"{options['users']} users ({results['sockets']} sockets), paced {options['rate']} msg/s for "
        f"{options['paced_seconds']} s, burst {options['burst']} msgs/user, idle up to {options['idle']} "
        f"connections in {options['idle_seconds']} s, history {options.get('history_rate')} readers scrolling "
        f"per second, then {options['history_workers']} as fast as they can, for {options['history_seconds']} s each, "
        f"under the paced chat; one server process each. CHAT_RATE_LIMIT={options['chat_rate_limit']} "
        "for the project (its default would throttle the burst)."
    )
    header = ["figure", *(SHORT[s] for s in columns), *(f"project ÷ {SHORT[s]}" for s in ratio_columns)]
    rows = [header]
    for label, read, _higher, pattern in FIGURES:
        values = {s: read(one[s]) for s in columns}
        if all(v is None for v in values.values()):
            continue
        ratios = [_ratio(values.get(PROJECT), values.get(s)) for s in ratio_columns]
        if label in ("lost", "duplicated", "out of order"):
            ratios = ["" for _ in ratio_columns]
        rows.append([label, *(_fmt(values[s], pattern) for s in columns), *ratios])
    lines.extend(_table(rows))

    scale_rows = [["burst delivered msg/s", "1 process", "2 processes", "2 ÷ 1", "lost/dup/ooo (2 proc)"]]
    for system in SYSTEMS:
        single, double = find(runs, system, 1), find(runs, system, 2)
        if double is None:
            continue
        a = _get("phases", "burst", "delivered_per_second")(single) if single else None
        b = _get("phases", "burst", "delivered_per_second")(double)
        c = double["correctness"]
        scale_rows.append(
            [
                SHORT[system],
                _fmt(a, "{:.0f}"),
                _fmt(b, "{:.0f}"),
                _ratio(b, a),
                f"{c['lost']}/{c['duplicated']}/{c['out_of_order']}",
            ]
        )
    if len(scale_rows) > 1:
        lines.append("")
        lines.append("Scale-out: users spread over two server processes sharing Redis and PostgreSQL")
        lines.extend(_table(scale_rows))

    lines.append("")
    lines.extend(results["notes"])
    return "\n".join(lines)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), *(cell.rjust(widths[i]) for i, cell in enumerate(row) if i)]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out
