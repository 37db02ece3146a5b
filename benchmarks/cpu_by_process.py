"""Where a command's CPU goes, by process kind: runs the command and samples ``/proc`` every ``--interval`` seconds,
keeping each process's last utime + stime, then prints the CPU seconds per kind (a Spark JVM by main class and
application, a Python process by script or module, else the executable), largest first.

Only processes started after the command are counted (not the machine's own). Sampling misses processes shorter
than the interval and a process's CPU after its last sample, so the totals are lower bounds; a process that
``exec``s (``spark-submit`` → ``java``) is counted under its last name.

    .venv/bin/python benchmarks/cpu_by_process.py [--interval 0.3] -- .venv/bin/python -m pytest -n 2 …

What it found for the test suite is in the README (Testing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def kind(pid: str) -> str | None:
    """A readable kind for ``pid`` from its command line (None once it is gone)."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return None
    if not argv:
        return None
    exe = os.path.basename(argv[0])
    if exe == "java":
        main = next((a for a in argv if a.startswith("org.apache.spark")), "java")
        app = next((os.path.basename(a) for a in argv if a.endswith(".py")), "")
        return f"java {main.rsplit('.', 1)[-1]} {app}".rstrip()
    if exe.startswith("python"):
        if "-m" in argv[1:]:
            return f"python -m {argv[argv.index('-m') + 1]}"
        return f"python {next((os.path.basename(a) for a in argv[1:] if not a.startswith('-')), '')}".rstrip()
    return exe


def stat(pid: str) -> tuple[float, int] | None:
    """(CPU seconds so far, start time in clock ticks since boot) of ``pid``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[19])


def boot_ticks_now() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * TICK)


def sample(command: list[str], interval: float) -> tuple[int, Counter, Counter]:
    started = boot_ticks_now() - 1
    proc = subprocess.Popen(command)
    last: dict[tuple[str, int], tuple[str, float]] = {}
    while proc.poll() is None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            got = stat(pid)
            if got is None or got[1] < started:
                continue
            name = kind(pid) or last.get((pid, got[1]), ("?", 0.0))[0]
            last[(pid, got[1])] = (name, got[0])
        time.sleep(interval)
    seconds, count = Counter(), Counter()
    for name, cpu in last.values():
        seconds[name] += cpu
        count[name] += 1
    return proc.returncode, seconds, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    rc, seconds, count = sample(command, args.interval)
    total = sum(seconds.values())
    print(f"{'CPU s':>9} {'share':>6} {'procs':>5}  kind")
    for name, cpu in seconds.most_common(args.top):
        print(f"{cpu:9.1f} {cpu / max(total, 1e-9):6.1%} {count[name]:5d}  {name}")
    print(f"{total:9.1f} total (exit {rc})")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
