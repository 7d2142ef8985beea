"""CPU and memory of processes and of the machine, read from /proc (Linux only)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all of its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may contain spaces; the fields after its closing ')' do not.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def matching_pids(needle: str) -> list[int]:
    """Processes whose command line contains `needle`, e.g. the PostgreSQL backends
    serving one database ("root bench_test ")."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if needle in cmdline.read().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _group_cpu_seconds(pids: list[int]) -> dict[int, float]:
    seconds = {}
    for pid in pids:
        try:
            seconds[pid] = process_cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return seconds


@dataclass
class Usage:
    """CPU used during a stretch of wall time, as a share of one core (1.0 = one core
    fully busy), per watched process and for the whole machine (cores summed)."""

    wall_seconds: float
    processes: dict[str, float]
    machine_cores_busy: float

    def as_dict(self) -> dict:
        return {
            "wall_seconds": round(self.wall_seconds, 3),
            "cpu_cores": {name: round(value, 3) for name, value in self.processes.items()},
            "machine_cores_busy": round(self.machine_cores_busy, 3),
        }


class UsageMeter:
    """Watch named processes (the benchmark client is `client`) over one phase."""

    def __init__(self, pids: dict[str, int], groups: dict[str, str] | None = None) -> None:
        self.pids = {"client": os.getpid(), **pids}
        # Name -> command-line needle: CPU summed over the processes that exist both at
        # the start and at the end (a backend born mid-phase is missed).
        self.groups = groups or {}

    def __enter__(self) -> UsageMeter:
        self.started = time.perf_counter()
        self.cpu = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        self.group_cpu = {name: _group_cpu_seconds(matching_pids(needle)) for name, needle in self.groups.items()}
        self.machine = machine_busy_ticks()
        self.usage: Usage | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.started
        busy, total = machine_busy_ticks()
        cores = os.cpu_count() or 1
        machine = (busy - self.machine[0]) / max(1, total - self.machine[1]) * cores
        processes = {}
        for name, pid in self.pids.items():
            try:
                processes[name] = (process_cpu_seconds(pid) - self.cpu[name]) / wall
            except FileNotFoundError:
                processes[name] = float("nan")
        for name, before in self.group_cpu.items():
            after = _group_cpu_seconds(list(before))
            processes[name] = sum(after[pid] - before[pid] for pid in after) / wall
        self.usage = Usage(wall, processes, machine)
