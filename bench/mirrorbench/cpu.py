"""CPU accounting of a bdevperf run's I/O phase: its own CPU time (/proc/<pid>/stat) and its CPUs'
busy and steal time (/proc/stat), snapshotted when bdevperf starts and ends its I/O."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def cpu_times() -> dict[int, tuple[int, int]]:
    """Per CPU (busy, steal) jiffies from /proc/stat; busy excludes idle and iowait and
    includes steal (time the hypervisor gave to someone else)."""
    out = {}
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            m = re.match(r"cpu(\d+)\s+(.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                v += [0] * (8 - len(v))
                user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
                out[int(m.group(1))] = (user + nice + system + irq + softirq + steal, steal)
    except OSError:
        pass
    return out


def proc_cpu_s(pid: int) -> float | None:
    """User+system CPU seconds of a live process (all its threads) from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Snapshot:
    t: float
    proc_cpu: float | None
    cpus: dict


def snapshot(pid: int) -> Snapshot:
    return Snapshot(time.monotonic(), proc_cpu_s(pid), cpu_times())


def supervise(proc: subprocess.Popen, log_path: Path, timeout: float) -> dict:
    """Waits for bdevperf (SIGKILL past `timeout`) while watching its log: snapshots of its CPU
    time and of /proc/stat are taken when "Running I/O" appears and when the result table
    ("Latency(us)") appears, so CPU use is known for the I/O phase alone, start-up and
    shutdown excluded. Returns exit code (None when killed on timeout), CPU seconds of the
    whole process, and the two snapshots (None when not seen)."""
    deadline = time.monotonic() + timeout
    tail = ""
    start = end = None
    with open(log_path, "r", errors="replace") as log:
        while True:
            chunk = log.read()
            if chunk:
                window = tail + chunk  # a marker may straddle two reads
                tail = window[-64:]
                if start is None and "Running I/O for" in window:
                    start = snapshot(proc.pid)
                if start is not None and end is None and "Latency(us)" in window:
                    end = snapshot(proc.pid)
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return {"rc": proc.returncode, "cpu_s": ru.ru_utime + ru.ru_stime,
                        "start": start, "end": end}
            if time.monotonic() > deadline:
                proc.kill()
                _, status, ru = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                return {"rc": None, "cpu_s": ru.ru_utime + ru.ru_stime,
                        "start": start, "end": end}
            time.sleep(0.02)


def io_phase_cpu(start: Snapshot | None, end: Snapshot | None, cores: list[int]) -> dict:
    """CPU accounting of the I/O phase: how much of its CPUs bdevperf got (`cpu_got_pct`, 100 =
    every core of the run busy with bdevperf all the time; SPDK reactors poll, so anything
    below 100 was taken by someone else), and how much others took (`others_cpu_pct`: busy
    time of those CPUs in /proc/stat, steal included, minus bdevperf's own)."""
    none = {"io_wall_s": None, "io_cpu_s": None, "cpu_got_pct": None, "others_cpu_pct": None,
            "steal_pct": None}
    if start is None or end is None or start.proc_cpu is None or end.proc_cpu is None:
        return none
    wall = end.t - start.t
    if wall <= 0:
        return none
    hz = os.sysconf("SC_CLK_TCK")
    own = end.proc_cpu - start.proc_cpu
    span = wall * len(cores)
    busy = sum(end.cpus[c][0] - start.cpus[c][0] for c in cores
               if c in start.cpus and c in end.cpus) / hz
    steal = sum(end.cpus[c][1] - start.cpus[c][1] for c in cores
                if c in start.cpus and c in end.cpus) / hz
    return {"io_wall_s": round(wall, 3), "io_cpu_s": round(own, 3),
            "cpu_got_pct": round(min(100.0, own / span * 100), 1),
            "others_cpu_pct": round(max(0.0, busy - own) / span * 100, 1),
            "steal_pct": round(steal / span * 100, 1)}

