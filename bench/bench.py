#!/usr/bin/env python3
"""Benchmark the `mirror` bdev module against SPDK's own raid1 (and raid0-over-raid1 for RAID10).

Runs SPDK's stock `bdevperf` once per measurement with a JSON config, the module injected with
LD_PRELOAD, and reports IOPS, MiB/s, mean and p99 latency, and the ratio of each system to the
SPDK reference measured in the same run. Writes bench/results/<stamp>.{md,svg,json}.

Python 3.11 standard library only. Builds nothing: run `cargo build --release` first.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LIB = REPO / "target" / "release" / "libspdk_mirror.so"
RESULTS_DIR = REPO / "bench" / "results"

BLOCK = 4096
NULL_BLOCKS = (1 << 30) // BLOCK  # 1 GiB null bdevs
MALLOC_BLOCKS = (64 << 20) // BLOCK  # 64 MiB malloc bdevs
MEM_MB = 1024  # DPDK memory (-s) per bdevperf process
MIRROR_OPTS = {"pool_size": 256, "max_parents": 1024}
RAID10_CHUNK_KB = 64
P99 = 99.0

# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    label: str
    rw: str  # bdevperf -w
    io_size: int  # -o
    qd: int  # -q

    @property
    def small(self) -> bool:
        return self.io_size <= 4096


RANDWRITE_4K = Workload("4K randwrite QD128", "randwrite", 4096, 128)
RANDREAD_4K = Workload("4K randread QD128", "randread", 4096, 128)
SEQWRITE_128K = Workload("128K seq write QD32", "write", 128 * 1024, 32)


@dataclass(frozen=True)
class System:
    """One bdev stack to measure: a label, the bdev subsystem config and the bdev to drive."""

    label: str
    role: str  # "mirror", "reference" or "ceiling"
    config: tuple  # tuple of JSON-able dicts (frozen dataclass: keep it hashable-ish)
    target: str


def null_bdev(name: str) -> dict:
    return {"method": "bdev_null_create",
            "params": {"name": name, "num_blocks": NULL_BLOCKS, "block_size": BLOCK}}


def malloc_bdev(name: str) -> dict:
    return {"method": "bdev_malloc_create",
            "params": {"name": name, "num_blocks": MALLOC_BLOCKS, "block_size": BLOCK}}


BACKENDS = {
    "null": (null_bdev, "null 1 GiB"),
    "malloc": (malloc_bdev, "malloc 64 MiB"),
}


NO_BITMAP = "mirror raid1, no bitmap"


def mirror_raid1(backend: str, bitmap: bool = True) -> System:
    """The mirror as users create it (superblock and write-intent bitmap on the legs), or with
    `superblock: false` (data only), to measure what the bitmap costs."""
    make, _ = BACKENDS[backend]
    legs = [f"{backend}0", f"{backend}1"]
    cfg = [make(n) for n in legs] + [{
        "method": "bdev_mirror_create",
        "params": {"name": "m", "level": "raid1", "base_bdevs": legs, "superblock": bitmap,
                   **MIRROR_OPTS}}]
    return System("mirror raid1" if bitmap else NO_BITMAP, "mirror", tuple(cfg), "m")


def spdk_raid1(backend: str) -> System:
    make, _ = BACKENDS[backend]
    legs = [f"{backend}0", f"{backend}1"]
    cfg = [make(n) for n in legs] + [{
        "method": "bdev_raid_create",
        "params": {"name": "r", "raid_level": "raid1", "base_bdevs": legs}}]
    return System("SPDK raid1", "reference", tuple(cfg), "r")


def single(backend: str) -> System:
    make, _ = BACKENDS[backend]
    return System(f"single {backend} (ceiling)", "ceiling", (make(f"{backend}0"),), f"{backend}0")


def mirror_raid10() -> System:
    legs = [f"null{i}" for i in range(4)]
    cfg = [null_bdev(n) for n in legs] + [{
        "method": "bdev_mirror_create",
        "params": {"name": "m", "level": "raid10", "layout": "n2", "chunk_kb": RAID10_CHUNK_KB,
                   "base_bdevs": legs, **MIRROR_OPTS}}]
    return System("mirror raid10 n2", "mirror", tuple(cfg), "m")


def spdk_raid0_over_raid1() -> System:
    legs = [f"null{i}" for i in range(4)]
    cfg = [null_bdev(n) for n in legs] + [
        {"method": "bdev_raid_create",
         "params": {"name": "r1a", "raid_level": "raid1", "base_bdevs": legs[0:2]}},
        {"method": "bdev_raid_create",
         "params": {"name": "r1b", "raid_level": "raid1", "base_bdevs": legs[2:4]}},
        {"method": "bdev_raid_create",
         "params": {"name": "r0", "raid_level": "raid0", "strip_size_kb": RAID10_CHUNK_KB,
                    "base_bdevs": ["r1a", "r1b"]}},
    ]
    return System("SPDK raid0 over 2x raid1", "reference", tuple(cfg), "r0")


@dataclass
class Row:
    config: str  # e.g. "2x null 1 GiB"
    backend: str
    workload: Workload
    cores: int
    systems: list[System]
    samples: dict[str, list[dict]] = field(default_factory=dict)  # system label -> runs

    @property
    def key(self) -> str:
        return f"{self.config} | {self.workload.label} | {self.cores}c"

    @property
    def reference(self) -> System:
        return next(s for s in self.systems if s.role == "reference")


def build_rows(quick: bool) -> list[Row]:
    rows: list[Row] = []
    backends = ["null"] if quick else ["null", "malloc"]
    core_counts = [1] if quick else [1, 2]
    for backend in backends:
        for cores in core_counts:
            for wl in (RANDWRITE_4K, RANDREAD_4K, SEQWRITE_128K):
                systems = [mirror_raid1(backend), spdk_raid1(backend)]
                if wl.rw != "randread":
                    systems.append(mirror_raid1(backend, bitmap=False))
                if wl.small:
                    systems.append(single(backend))
                rows.append(Row(f"2x {BACKENDS[backend][1]}", backend, wl, cores, systems))
    for wl in (RANDWRITE_4K, RANDREAD_4K):
        rows.append(Row("4x null 1 GiB, RAID10 64K chunk", "null", wl, 1,
                        [mirror_raid10(), spdk_raid0_over_raid1(), single("null")]))
    return rows


# --------------------------------------------------------------------------------------------
# Finding things
# --------------------------------------------------------------------------------------------


def spdk_app_dirs(spdk_dir: str | None, pkg_prefix: str | None, path: str | None) -> list[Path]:
    """Where SPDK's apps are looked for, in order (as the tests do, tests/support/mod.rs):
    SPDK_DIR as a built source tree (build/bin, build/examples) or an install prefix (bin), the
    bin of pkg-config's spdk_bdev prefix, then PATH."""
    dirs = []
    if spdk_dir:
        d = Path(spdk_dir)
        dirs += [d / "build" / "bin", d / "build" / "examples", d / "bin"]
    if pkg_prefix:
        dirs.append(Path(pkg_prefix) / "bin")
    dirs += [Path(d) for d in (path or "").split(os.pathsep) if d]
    return dirs


def spdk_pkg_prefix(spdk_dir: str | None) -> str | None:
    """pkg-config spdk_bdev's prefix variable, else the parent of its first -L directory (SPDK's
    .pc files define no prefix: an install says -L<prefix>/lib, a built source tree
    -L<tree>/build/lib). Searched as the build does: SPDK_DIR's pkgconfig directory first."""
    pc_path = [p for p in os.environ.get("PKG_CONFIG_PATH", "").split(os.pathsep) if p]
    for sub in ("build/lib/pkgconfig", "lib/pkgconfig", "lib64/pkgconfig"):
        if spdk_dir and (Path(spdk_dir) / sub / "spdk_bdev.pc").is_file():
            pc_path.insert(0, str(Path(spdk_dir) / sub))
            break
    env = dict(os.environ, PKG_CONFIG_PATH=os.pathsep.join(pc_path))

    def ask(arg: str) -> str:
        try:
            out = subprocess.run(["pkg-config", arg, "spdk_bdev"], capture_output=True, text=True,
                                 timeout=20, stdin=subprocess.DEVNULL, env=env)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    var = ask("--variable=prefix")
    if var:
        return var
    libs = ask("--libs-only-L").split()
    for arg in libs:
        if arg.startswith("-L") and len(arg) > 2:
            parent = str(Path(arg[2:]).parent)
            return parent if parent != "/" else None
    return None


def how_to_get(name: str) -> str:
    if name == "bdevperf":
        return ("not installed by SPDK's make install: set SPDK_DIR to the built SPDK source tree "
                "(build/examples/bdevperf) or copy it onto PATH")
    return (f"SPDK builds it into build/bin/{name} and make install copies it to <prefix>/bin: "
            "set SPDK_DIR to the built SPDK source tree or to the install prefix, or put it on PATH")


def find_spdk_app(name: str) -> tuple[Path | None, str]:
    """The first executable `name` in spdk_app_dirs(), or None and a message naming it, where it
    was looked for and how to get it."""
    spdk_dir = os.environ.get("SPDK_DIR") or None
    pkg_prefix = spdk_pkg_prefix(spdk_dir)
    for d in spdk_app_dirs(spdk_dir, pkg_prefix, os.environ.get("PATH")):
        p = d / name
        if p.is_file() and os.access(p, os.X_OK):
            return p, ""
    searched = [f"SPDK_DIR={spdk_dir} (build/bin, build/examples, bin)" if spdk_dir
                else "no SPDK_DIR",
                f"pkg-config prefix {pkg_prefix}/bin" if pkg_prefix else "no pkg-config prefix",
                "PATH"]
    return None, f"`{name}` not found (searched {', '.join(searched)}): {how_to_get(name)}"


def find_bdevperf(explicit: str | None) -> tuple[Path | None, str]:
    if explicit:
        p = Path(explicit)
        if p.is_file() and os.access(p, os.X_OK):
            return p, ""
        return None, f"SPDK's bdevperf was not found at {explicit} (--bdevperf)"
    return find_spdk_app("bdevperf")


def stale_lib_warning(lib: Path) -> str | None:
    """Warns if any Rust source under src/ or spdk/ is newer than the module library."""
    try:
        lib_mtime = lib.stat().st_mtime
    except OSError:
        return None
    newest = None
    for top in (REPO / "src", REPO / "spdk"):
        for p in top.rglob("*"):
            if p.suffix in (".rs", ".c", ".h") and p.is_file():
                m = p.stat().st_mtime
                if m > lib_mtime and (newest is None or m > newest[0]):
                    newest = (m, p)
    if newest:
        return (f"warning: {newest[1].relative_to(REPO)} is newer than {lib}; "
                "the numbers may not be of the current source (run `cargo build --release`)")
    return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_text(cmd: list[str], timeout: float = 20) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or "").strip() or (out.stderr or "").strip()
    return text if out.returncode == 0 and text else None


def machine_info(bdevperf: Path, lib: Path) -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    spdk = run_text([str(bdevperf), "--version"])
    if spdk:
        spdk = spdk.splitlines()[-1].strip()
    else:
        pc = run_text(["pkg-config", "--modversion", "spdk_bdev"])
        spdk = f"pkg-config spdk_bdev {pc}" if pc else "unknown"
    commit = run_text(["git", "-C", str(REPO), "rev-parse", "HEAD"]) or "unknown"
    dirty = run_text(["git", "-C", str(REPO), "diff", "--name-only", "HEAD"])
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "uname": run_text(["uname", "-a"]) or " ".join(platform.uname()),
        "cpu_model": cpu or "unknown",
        "cpus_online": os.cpu_count(),
        "load_average_at_start": load,
        "spdk_version": spdk,
        "git_commit": commit + (" + uncommitted changes to " + ", ".join(
            dirty.splitlines()[:8]) if dirty else ""),
        "module_lib": str(lib),
        "bdevperf": str(bdevperf),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------------------------
# Running and parsing bdevperf
# --------------------------------------------------------------------------------------------

NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
TOTAL_RE = re.compile(rf"^\s*Total\s*:\s*((?:{NUM}\s+){{6}}{NUM})\s*$")
JOB_ROW_RE = re.compile(rf"^\s*(\S+)\s*:\s*((?:{NUM}\s+){{7}}{NUM})\s*$")
BUCKET_RE = re.compile(rf"^\s*({NUM})\s*-\s*({NUM}):\s*({NUM})%\s*\(\s*(\d+)\)\s*$")
SUMMARY_RE = re.compile(rf"^\s*({NUM})%\s*:\s*({NUM})us\s*$")


def parse_bdevperf(text: str) -> dict:
    """Parses bdevperf's final table and its `-ll` latency summary and histogram.

    The Total row: IOPS, MiB/s, Fail/s, TO/s, Average, min, max (latencies in us). The
    histogram has one block per job (`Job: <bdev> (Core Mask 0x..)`) of lines
    `  <start> - <end>:  <cumulative %>  ( <count>)`, bucket bounds in us. p99 of the run is
    taken from the histograms of all jobs merged (the end of the bucket where the cumulative
    count reaches 99 %, as bdevperf's own summary does for one job); when there is no
    histogram, the per-job summary's 99 % line is used (the worst job); when neither is
    there, p99 is None.
    """
    lines = text.replace("\r", "\n").splitlines()
    res: dict = {"total": None, "jobs": [], "p99_us": None, "p99_source": None,
                 "job_p99_us": [], "failures": 0}
    section = None
    buckets: dict[tuple[float, float], int] = {}
    for line in lines:
        s = line.strip()
        if s.startswith("Latency summary"):
            section = "summary"
            continue
        if s.startswith("Latency histogram"):
            section = "histogram"
            continue
        if s.startswith("task offset:") and s.endswith("fails"):
            res["failures"] += 1
            continue
        if section is None:
            m = TOTAL_RE.match(line)
            if m:
                n = [float(x) for x in m.group(1).split()]
                res["total"] = {"iops": n[0], "mib_s": n[1], "fail_s": n[2], "to_s": n[3],
                                "avg_us": n[4], "min_us": n[5], "max_us": n[6]}
                continue
            m = JOB_ROW_RE.match(line)
            if m:
                n = [float(x) for x in m.group(2).split()]
                res["jobs"].append({"name": m.group(1), "runtime_s": n[0], "iops": n[1],
                                    "mib_s": n[2], "avg_us": n[5]})
        elif section == "summary":
            m = SUMMARY_RE.match(line)
            if m and abs(float(m.group(1)) - P99) < 1e-9:
                res["job_p99_us"].append(float(m.group(2)))
        elif section == "histogram":
            m = BUCKET_RE.match(line)
            if m:
                k = (float(m.group(1)), float(m.group(2)))
                buckets[k] = buckets.get(k, 0) + int(m.group(4))
    if buckets:
        total = sum(buckets.values())
        cum = 0
        for (_, end), count in sorted(buckets.items(), key=lambda kv: kv[0][1]):
            cum += count
            if cum * 100.0 >= P99 * total:
                res["p99_us"] = end
                res["p99_source"] = "merged -ll histogram"
                break
        res["histogram_ios"] = total
    elif res["job_p99_us"]:
        res["p99_us"] = max(res["job_p99_us"])
        res["p99_source"] = "worst job's -l summary"
    return res


def cores_of(row: Row, core: int) -> list[int]:
    """The CPUs a row's bdevperf runs on: `core` for one-core rows (-m 0x1 by default), CPUs 0
    and 1 for two-core rows (-m 0x3)."""
    return [core] if row.cores == 1 else list(range(row.cores))


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


def run_bdevperf(bdevperf: Path, lib: Path, system: System, row: Row, seconds: int,
                 workdir: Path, seq: int, core: int = 0) -> dict:
    cfg_path = workdir / f"run{seq:03d}.json"
    log_path = workdir / f"run{seq:03d}.log"
    cfg_path.write_text(json.dumps({"subsystems": [
        {"subsystem": "bdev", "config": list(system.config)}]}, indent=1))
    sock = workdir / f"s{seq}.sock"
    mask = hex(sum(1 << c for c in cores_of(row, core)))
    cmd = [str(bdevperf), "--no-huge", "-s", str(MEM_MB), "--no-pci", "-m", mask,
           "--disable-cpumask-locks", "-r", str(sock), "-c", str(cfg_path),
           "-q", str(row.workload.qd), "-o", str(row.workload.io_size), "-w", row.workload.rw,
           "-t", str(seconds), "-ll", "-T", system.target]
    if row.cores > 1:
        cmd.append("-C")
    env = dict(os.environ)
    # The module is preloaded into every run, reference runs included, so that every process
    # has the same image; an unused module costs nothing at run time.
    env["LD_PRELOAD"] = " ".join(x for x in (str(lib), env.get("LD_PRELOAD", "")) if x)
    error = None
    started = time.monotonic()
    # bdevperf's stdout into a file is block-buffered, so "Running I/O" would only show at
    # exit; stdbuf (coreutils) makes it line-buffered so that the I/O phase can be timed.
    stdbuf = shutil.which("stdbuf")
    launch = [stdbuf, "-oL", *cmd] if stdbuf else cmd
    with open(log_path, "w") as log:
        proc = subprocess.Popen(launch, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)
        try:
            sup = supervise(proc, log_path, seconds + 90)
        except BaseException:  # Ctrl-C, a closed stdout...: never leave bdevperf running
            proc.kill()
            proc.wait()
            raise
    rc = sup["rc"]
    if rc is None:
        error = f"timed out after {seconds + 90} s (killed)"
    wall = time.monotonic() - started
    try:
        sock.unlink()
    except OSError:
        pass
    text = log_path.read_text(errors="replace")
    parsed = parse_bdevperf(text)
    if error is None:
        if rc != 0:
            error = f"exit status {rc}"
        elif parsed["total"] is None:
            error = "no Total row in the output"
        elif parsed["total"]["fail_s"] > 0 or parsed["failures"]:
            error = f"failed I/O (Fail/s {parsed['total']['fail_s']})"
    out = {"command": " ".join(cmd), "wall_s": round(wall, 2), "exit": rc, "error": error,
           "log": str(log_path), "bdevperf_cpu_s": round(sup["cpu_s"], 3), **parsed,
           **io_phase_cpu(sup["start"], sup["end"], cores_of(row, core))}
    # I/Os per CPU-second of the I/O phase: what the stack does per unit of CPU, which a
    # neighbour stealing CPU time changes much less than IOPS (a polled, CPU-bound run).
    if parsed["total"] and out["io_cpu_s"]:
        ios = sum(j["iops"] * j["runtime_s"] for j in parsed["jobs"]) or \
            parsed["total"]["iops"] * seconds
        out["iops_per_cpu_s"] = ios / out["io_cpu_s"]
    else:
        out["iops_per_cpu_s"] = None
    if error:
        tail = "\n".join(text.replace("\r", "\n").splitlines()[-15:])
        out["output_tail"] = tail
    return out


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def median_or_none(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(rows: list[Row]) -> list[dict]:
    """One result line per (row, system): medians over the repeats and the ratio to the row's
    reference, both medians of the same run."""
    out = []
    for row in rows:
        meds = {}
        for sysm in row.systems:
            runs = [r for r in row.samples.get(sysm.label, []) if not r["error"]]
            tot = [r["total"] for r in runs]
            meds[sysm.label] = {
                "iops": median_or_none([t["iops"] for t in tot]),
                "mib_s": median_or_none([t["mib_s"] for t in tot]),
                "avg_us": median_or_none([t["avg_us"] for t in tot]),
                "p99_us": median_or_none([r["p99_us"] for r in runs]),
                "p99_available": any(r["p99_us"] is not None for r in runs),
                "cpu_got_pct": median_or_none([r.get("cpu_got_pct") for r in runs]),
                "cpu_got_pct_min": min((r["cpu_got_pct"] for r in runs
                                        if r.get("cpu_got_pct") is not None), default=None),
                "others_cpu_pct": median_or_none([r.get("others_cpu_pct") for r in runs]),
                "iops_per_cpu_s": median_or_none([r.get("iops_per_cpu_s") for r in runs]),
                "ok_runs": len(runs),
                "runs": len(row.samples.get(sysm.label, [])),
                "iops_samples": [t["iops"] for t in tot],
                "errors": [r["error"] for r in row.samples.get(sysm.label, []) if r["error"]],
            }
        ref = meds[row.reference.label]["iops"]
        ref_cpu = meds[row.reference.label]["iops_per_cpu_s"]
        for sysm in row.systems:
            m = meds[sysm.label]
            ratio = (m["iops"] / ref) if (m["iops"] is not None and ref) else None
            ratio_cpu = (m["iops_per_cpu_s"] / ref_cpu) \
                if (m["iops_per_cpu_s"] is not None and ref_cpu) else None
            out.append({"config": row.config, "workload": row.workload.label,
                        "cores": row.cores, "system": sysm.label, "role": sysm.role,
                        "reference": row.reference.label, "ratio_to_reference": ratio,
                        "ratio_per_cpu_s": ratio_cpu, **m})
    return out


def bitmap_cost_lines(results: list[dict]) -> list[str]:
    """The write-path cost of the write-intent bitmap: IOPS with it over IOPS without, per row
    (both medians of this run). The legs' regions are dirty after the first writes, so this is
    the steady-state cost a write pays for its bitmap bookkeeping."""
    lines = []
    rows = {}
    for r in results:
        rows.setdefault((r["config"], r["workload"], r["cores"]), {})[r["system"]] = r
    for (config, wl, cores), sy in rows.items():
        on, off = sy.get("mirror raid1"), sy.get(NO_BITMAP)
        if on and off and on["iops"] and off["iops"]:
            lines.append(f"{config} | {wl} | {cores}c: bitmap on / off = {on['iops'] / off['iops']:.3f} "
                         f"({on['iops']:,.0f} vs {off['iops']:,.0f} IOPS)")
    return lines


def fmt(v: float | None, spec: str, none: str = "n/a") -> str:
    return none if v is None else format(v, spec)


CPU_FAIR_PCT = 90  # below this share of its cores, a run's tail latency is the scheduler's

TABLE_HEAD = ["config", "workload", "cores", "system", "IOPS", "MiB/s", "mean lat us",
              "p99 us", "ratio to ref", "CPU got %", "IOPS per CPU-s", "ratio per CPU-s"]
RIGHT = {2, 4, 5, 6, 7, 8, 9, 10, 11}


def table_cells(results: list[dict]) -> list[list[str]]:
    cells = []
    for r in results:
        if r["ok_runs"] == 0:
            err = r["errors"][0] if r["errors"] else "not run"
            cells.append([r["config"], r["workload"], str(r["cores"]), r["system"],
                          "FAILED", "-", "-", "-", err[:40], "-", "-", "-"])
            continue
        p99 = fmt(r["p99_us"], ".1f", "n/a (no histogram)")
        if r["p99_us"] is not None and r["cpu_got_pct"] is not None \
                and r["cpu_got_pct"] < CPU_FAIR_PCT:
            p99 += " *"
        ratio = fmt(r["ratio_to_reference"], ".2f")
        ratio_cpu = fmt(r["ratio_per_cpu_s"], ".2f")
        if r["role"] == "reference":
            ratio = "1.00 (ref)"
            ratio_cpu = "1.00 (ref)" if r["ratio_per_cpu_s"] is not None else "n/a"
        cells.append([r["config"], r["workload"], str(r["cores"]), r["system"],
                      fmt(r["iops"], ",.0f"), fmt(r["mib_s"], ",.1f"), fmt(r["avg_us"], ".2f"),
                      p99, ratio, fmt(r["cpu_got_pct"], ".0f"), fmt(r["iops_per_cpu_s"], ",.0f"),
                      ratio_cpu])
    return cells


def text_table(results: list[dict]) -> str:
    cells = table_cells(results)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(TABLE_HEAD)]
    right = RIGHT

    def line(row):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths)))

    out = [line(TABLE_HEAD), "  ".join("-" * w for w in widths)]
    prev = None
    for c, r in zip(cells, results):
        k = (r["config"], r["workload"], r["cores"])
        if prev is not None and k != prev:
            out.append("")
        prev = k
        out.append(line(c))
    return "\n".join(out)


def markdown(meta: dict, args: argparse.Namespace, results: list[dict], svg_name: str,
             json_name: str, notes: list[str]) -> str:
    md = [f"# spdk-mirror benchmark, {meta['date']}", ""]
    md += ["| | |", "| --- | --- |"]
    for k, label in [("date", "date"), ("uname", "uname -a"), ("cpu_model", "CPU"),
                     ("cpus_online", "CPUs online"), ("load_average_at_start", "load average at start"),
                     ("spdk_version", "SPDK"), ("git_commit", "git commit"),
                     ("module_lib", "module"), ("module_built", "module built"),
                     ("module_sha256", "module sha256"), ("note", "note")]:
        if meta.get(k) not in (None, ""):
            md.append(f"| {label} | `{meta[k]}` |")
    md.append(f"| run | {'--quick, ' if args.quick else ''}{args.time} s per measurement, "
              f"{args.repeat} repeat(s), median reported; one core = CPU {args.core} "
              f"(-m {hex(1 << args.core)}), two cores = CPUs 0,1 (-m 0x3 -C) |")
    md += ["", "Each row's systems ran back to back, interleaved (mirror, reference, ceiling, "
           "mirror, ...), one bdevperf process per measurement. Ratio = IOPS / IOPS of the row's "
           "reference (SPDK raid1; SPDK raid0 over two raid1 for the RAID10 rows), both medians of "
           "this run. Latencies in microseconds; p99 from bdevperf's `-ll` latency histogram (all "
           "jobs of the run merged; bucket upper bound). *CPU got %*: bdevperf's CPU time during "
           "its I/O phase (from /proc/<pid>/stat, start-up excluded) over that phase's wall time "
           "x cores. SPDK reactors poll, so anything below 100 was taken by other processes on "
           "the same CPUs, and IOPS drop with it. *IOPS per CPU-s*: I/Os completed per second of "
           "bdevperf CPU time, i.e. the IOPS the stack would do with its cores to itself; on a "
           "shared machine its ratio (*ratio per CPU-s*) is the steadier of the two ratios.", ""]
    md.append("| " + " | ".join(TABLE_HEAD) + " |")
    md.append("|" + "|".join(" ---: " if i in RIGHT else " --- "
                             for i in range(len(TABLE_HEAD))) + "|")
    for c, r in zip(table_cells(results), results):
        if r["role"] == "mirror":
            c = c[:3] + [f"**{c[3]}**"] + c[4:8] + [f"**{c[8]}**"] + c[9:11] + [f"**{c[11]}**"]
        md.append("| " + " | ".join(x.replace("|", "/") for x in c) + " |")
    cost = bitmap_cost_lines(results)
    if cost:
        md += ["", "## Write-intent bitmap cost", "",
               "IOPS of the mirror with its superblock and bitmap (the default) over IOPS of the "
               "same mirror created with `superblock: false`, same run:", ""]
        md += [f"- {c}" for c in cost]
    md += ["", f"![IOPS per row]({svg_name})", "", f"All numbers, every repeat: `{json_name}`.", ""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(md)


COLORS = {"mirror": "#d95f02", "reference": "#1b9e77", "ceiling": "#bdbdbd"}


def nice_ticks(vmax: float, n: int = 5) -> list[float]:
    if vmax <= 0:
        return [0.0]
    raw = vmax / n
    mag = 10 ** int(f"{raw:e}".split("e")[1])
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks, t = [], 0.0
    while t <= vmax * 1.0001:
        ticks.append(t)
        t += step
    return ticks


def human(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.0f}K"
    return f"{v:.0f}"


def svg_chart(meta: dict, results: list[dict]) -> str:
    """Horizontal grouped bars of IOPS. One panel per (workload, config) with its own linear
    scale, one group per core count, one bar per system, ratios printed by the bars. The scale
    is set by the mirror and its reference; a ceiling bar beyond it is cut, marked with a
    zigzag and labelled 'off scale'."""
    width, label_w, right_pad = 1000, 90, 330
    plot_w = width - label_w - right_pad
    bar_h, bar_gap, group_gap = 14, 2, 10
    panels: dict[tuple[str, str], list[list[dict]]] = {}
    for r in results:
        groups = panels.setdefault((r["workload"], r["config"]), [])
        if groups and groups[-1][0]["cores"] == r["cores"]:
            groups[-1].append(r)
        else:
            groups.append([r])
    parts = []
    y = 62
    for (wl, cfg), groups in panels.items():
        compared = [(r["iops"] or 0) for g in groups for r in g if r["role"] != "ceiling"]
        vmax = max(compared, default=0) or max((r["iops"] or 0) for g in groups for r in g) or 1
        ticks = nice_ticks(vmax * 1.05)
        scale_max = max(ticks[-1], vmax)
        scale = plot_w / scale_max
        parts.append(f'<text x="10" y="{y}" class="panel">{escape(wl)}, {escape(cfg)}</text>')
        y += 10
        top = y
        body = []
        for g in groups:
            gy = y
            for r in g:
                v = r["iops"] or 0.0
                cut = v > scale_max
                w = min(v, scale_max) * scale
                body.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                            f'fill="{COLORS[r["role"]]}"><title>{escape(r["system"])}: '
                            f'{v:,.0f} IOPS</title></rect>')
                if cut:  # a white zigzag across the bar's end: it goes on beyond the scale
                    x0 = label_w + w - 14
                    body.append(f'<polyline points="{x0:.1f},{y} {x0 + 4:.1f},{y + bar_h / 2:.1f} '
                                f'{x0:.1f},{y + bar_h}" fill="none" stroke="white" '
                                f'stroke-width="3"/>')
                name = r["system"].replace(" (ceiling)", "")
                if r["iops"] is None:
                    txt = f'{name}: failed'
                else:
                    txt = f'{name}: {human(v)}'
                    extra = []
                    if r["role"] != "reference" and r["ratio_to_reference"] is not None:
                        extra.append(f'{r["ratio_to_reference"]:.2f}x ref')
                        if r["ratio_per_cpu_s"] is not None and r["role"] == "mirror":
                            extra.append(f'{r["ratio_per_cpu_s"]:.2f}x per CPU-s')
                    if cut:
                        extra.append("off scale")
                    if extra:
                        txt += f'  ({", ".join(extra)})'
                body.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 3}" '
                            f'class="val">{escape(txt)}</text>')
                y += bar_h + bar_gap
            mid = (gy + y - bar_gap) / 2 + 4
            n = g[0]["cores"]
            body.append(f'<text x="{label_w - 8}" y="{mid:.1f}" class="grp" text-anchor="end">'
                        f'{n} core{"s" if n > 1 else ""}</text>')
            y += group_gap
        bottom = y - group_gap + 4
        for t in ticks:
            x = label_w + t * scale
            parts.append(f'<line x1="{x:.1f}" y1="{top - 2}" x2="{x:.1f}" y2="{bottom}" '
                         f'class="grid"/>')
            parts.append(f'<text x="{x:.1f}" y="{bottom + 12}" class="tick" '
                         f'text-anchor="middle">{human(t)}</text>')
        parts += body
        y = bottom + 38
    height = y - 10
    legend = []
    lx = 10
    for role, name in [("mirror", "mirror module"),
                       ("reference", "SPDK reference (raid1; raid0 over 2x raid1 for RAID10)"),
                       ("ceiling", "single base bdev (ceiling)")]:
        legend.append(f'<rect x="{lx}" y="30" width="12" height="12" fill="{COLORS[role]}"/>')
        legend.append(f'<text x="{lx + 16}" y="40" class="val">{escape(name)}</text>')
        lx += 16 + int(6.2 * len(name)) + 24
    title = (f"spdk-mirror vs SPDK, IOPS (bdevperf; x-axis per panel), {meta['date']}, "
             f"{meta['cpu_model']}, commit {meta['git_commit'][:12]}")
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        "<style>.panel{font-size:13px;font-weight:bold}.grp{font-size:12px}"
        ".val{font-size:11px}.tick{font-size:10px;fill:#555}"
        ".grid{stroke:#ddd;stroke-width:1}.title{font-size:13px}</style>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="18" class="title">{escape(title)}</text>',
        *legend, *parts, "</svg>", ""])


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def replot(json_path: Path) -> int:
    """Rewrites <stem>.md and <stem>.svg from <stem>.json (e.g. after changing the chart)."""
    try:
        dump = json.loads(json_path.read_text())
        meta, results, notes = dump["meta"], dump["results"], dump.get("notes", [])
        a = dump["args"]
    except (OSError, ValueError, KeyError) as e:
        print(f"bench.py: cannot replot {json_path}: {e}", file=sys.stderr)
        return 2
    for r in results:  # dumps from before a column existed
        for k in ("ratio_per_cpu_s", "cpu_got_pct", "iops_per_cpu_s"):
            r.setdefault(k, None)
    args = argparse.Namespace(quick=a.get("quick", False), time=a.get("time_s"),
                              repeat=a.get("repeat", 1), core=a.get("core", 0))
    svg_path, md_path = json_path.with_suffix(".svg"), json_path.with_suffix(".md")
    svg_path.write_text(svg_chart(meta, results))
    md_path.write_text(markdown(meta, args, results, svg_path.name, json_path.name, notes))
    print(f"wrote {md_path}\n      {svg_path}")
    return 0


def run_all(args: argparse.Namespace, lib: Path, bdevperf: Path, workdir: Path,
            notes: list[str], ncpu: int) -> int:
    """Runs every measurement (the module preloaded from a copy in `workdir`) and writes the
    results. Returns the exit status."""
    lib_sha = file_sha256(lib)
    lib_mtime = dt.datetime.fromtimestamp(lib.stat().st_mtime).astimezone()
    run_lib = workdir / lib.name
    shutil.copy2(lib, run_lib)
    meta = machine_info(bdevperf, lib)
    meta["module_sha256"] = lib_sha
    meta["module_built"] = lib_mtime.isoformat(timespec="seconds")
    meta["note"] = args.note
    rows = build_rows(args.quick)
    if ncpu < 2:
        rows = [r for r in rows if r.cores == 1]
        notes.append("two-core rows skipped: only one CPU is online")
    if args.only:
        rows = [r for r in rows if args.only in r.key]
        if not rows:
            print(f"bench.py: no row matches --only {args.only!r}", file=sys.stderr)
            return 2
    n_runs = sum(len(r.systems) for r in rows) * args.repeat
    print(f"{meta['spdk_version']} | {meta['cpu_model']} | load {meta['load_average_at_start']}"
          f" | commit {meta['git_commit']}")
    print(f"{len(rows)} rows, {n_runs} bdevperf runs of {args.time} s "
          f"(about {n_runs * (args.time + 1.5) / 60:.1f} min)")

    seq = 0
    t0 = time.monotonic()
    try:
        for row in rows:
            for rep in range(args.repeat):
                for sysm in row.systems:
                    seq += 1
                    r = run_bdevperf(bdevperf, run_lib, sysm, row, args.time, workdir, seq,
                                     args.core)
                    r["repeat"] = rep
                    row.samples.setdefault(sysm.label, []).append(r)
                    status = (f"{r['total']['iops']:>12,.0f} IOPS  p99 "
                              f"{fmt(r['p99_us'], '.1f')} us  CPU got "
                              f"{fmt(r['cpu_got_pct'], '.0f')}%  per CPU-s "
                              f"{fmt(r['iops_per_cpu_s'], ',.0f')}" if not r["error"]
                              else f"ERROR: {r['error']}")
                    print(f"[{seq:3d}/{n_runs}] {row.key} | {sysm.label:<26} {status}",
                          flush=True)
                    if r["error"]:
                        print("    " + r.get("output_tail", "").replace("\n", "\n    "),
                              file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; reporting what was measured", file=sys.stderr)
        notes.append("The run was interrupted; rows without numbers were not measured.")
    elapsed = time.monotonic() - t0

    results = summarize(rows)
    try:
        now_sha = file_sha256(lib)
    except OSError:
        now_sha = None
    if now_sha != lib_sha:
        notes.append(f"{lib} was rebuilt or removed during the run; every measurement used the "
                     f"copy taken at the start (sha256 {lib_sha[:16]}, built "
                     f"{meta['module_built']}).")
    if not any(r["p99_available"] for r in results if r["ok_runs"]):
        notes.append("bdevperf printed no latency histogram or summary (`-ll`): p99 is not "
                     "reported (n/a), not estimated.")
    else:
        src = {r2.get("p99_source") for row in rows for runs in row.samples.values()
               for r2 in runs if r2.get("p99_source")}
        notes.append(f"p99 source: {', '.join(sorted(src))}; with `-C` (2 cores) each core runs "
                     "a job on the bdev and their histograms are merged.")
    starved = [r for r in results if r["cpu_got_pct"] is not None
               and r["cpu_got_pct"] < CPU_FAIR_PCT]
    if starved:
        notes.append(f"{len(starved)} of {len(results)} result lines got less than "
                     f"{CPU_FAIR_PCT} % of their CPUs (other processes polled on them too); their "
                     "p99 is marked * : it then measures the scheduler's time slices (a reactor "
                     "descheduled for milliseconds delays every I/O in flight), not the stack. "
                     "Their IOPS drop with the CPU they got; 'ratio per CPU-s' corrects for that.")
    for r in results:
        if r["role"] == "mirror" and r["ratio_to_reference"] is not None \
                and r["ratio_to_reference"] < 0.8:
            notes.append(f"mirror at {r['ratio_to_reference']:.2f}x of {r['reference']}'s IOPS "
                         f"({fmt(r['ratio_per_cpu_s'], '.2f')}x per CPU-s) in "
                         f"'{r['config']} / {r['workload']} / {r['cores']} core(s)'.")
        if r["errors"]:
            notes.append(f"{r['system']} in '{r['config']} / {r['workload']} / {r['cores']}c': "
                         f"{len(r['errors'])} failed run(s): {r['errors'][0]}")
    notes.append("The mirror module is LD_PRELOADed into every bdevperf process, reference runs "
                 "included. Null and malloc bdevs have 4096-byte blocks; every app runs with "
                 f"--no-huge -s {MEM_MB} --no-pci --disable-cpumask-locks -ll -T <bdev>; "
                 "2 cores = -m 0x3 -C (one job per core on the same bdev).")
    notes.append(f"Wall time {elapsed / 60:.1f} min. The machine is shared: compare ratios "
                 "within this run, not absolute numbers across runs.")

    print()
    print(text_table(results))
    print()
    for line in bitmap_cost_lines(results):
        print("bitmap cost:", line)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S") + ("-quick" if args.quick else "")
    md_path, svg_path, json_path = (out_dir / f"{stamp}.{ext}" for ext in ("md", "svg", "json"))
    svg_path.write_text(svg_chart(meta, results))
    md_path.write_text(markdown(meta, args, results, svg_path.name, json_path.name, notes))
    dump = {"meta": meta,
            "args": {"time_s": args.time, "repeat": args.repeat, "quick": args.quick,
                     "only": args.only, "mem_mb": MEM_MB, "core": args.core},
            "results": results,
            "runs": [{"config": row.config, "workload": row.workload.label,
                      "rw": row.workload.rw, "io_size": row.workload.io_size,
                      "qd": row.workload.qd, "cores": row.cores,
                      "systems": {s.label: {"role": s.role, "target": s.target,
                                            "bdev_config": list(s.config),
                                            "runs": [{k: v for k, v in r.items()
                                                      if k != "log" or args.keep_logs}
                                                     for r in row.samples.get(s.label, [])]}
                                  for s in row.systems}}
                     for row in rows],
            "notes": notes}
    json_path.write_text(json.dumps(dump, indent=1) + "\n")
    for n in notes:
        print(f"note: {n}")
    print(f"wrote {md_path}\n      {svg_path}\n      {json_path}")
    failed = sum(1 for r in results if r["ok_runs"] == 0)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark the mirror bdev module against SPDK raid1 with bdevperf.")
    ap.add_argument("--lib", help=f"module library (default {DEFAULT_LIB})")
    ap.add_argument("--bdevperf", help="bdevperf executable (default: SPDK_DIR's "
                    "build/examples or bin, pkg-config spdk_bdev's prefix/bin, PATH)")
    ap.add_argument("--time", type=int, default=None,
                    help="seconds per measurement (default 5; 1 with --quick)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure each system N times, interleaved, and report the median")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 s per measurement, one-core null rows only")
    ap.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep the per-run configs and bdevperf logs (path is printed)")
    ap.add_argument("--note", default="",
                    help="free text recorded with the results, e.g. what --lib was built from "
                         "(the git commit recorded is this repo's, which need not be --lib's)")
    ap.add_argument("--only", help="run only rows whose 'config | workload | Nc' contains this")
    ap.add_argument("--replot", metavar="JSON",
                    help="run nothing: rewrite the .md and .svg beside a results .json from it")
    ap.add_argument("--core", type=int, default=0,
                    help="CPU for the one-core rows (default 0, i.e. -m 0x1; pick one that "
                         "other SPDK apps are not polling on); two-core rows always use -m 0x3")
    args = ap.parse_args(argv)
    if args.replot:
        return replot(Path(args.replot))
    if args.time is None:
        args.time = 1 if args.quick else 5
    if args.time < 1 or args.repeat < 1:
        ap.error("--time and --repeat must be at least 1")
    ncpu = os.cpu_count() or 1
    if args.core < 0 or args.core >= ncpu:
        ap.error(f"--core must be in 0..{ncpu - 1}")

    lib = Path(args.lib) if args.lib else DEFAULT_LIB
    bdevperf, why = find_bdevperf(args.bdevperf)
    missing = []
    if bdevperf is None:
        missing.append(why + (" (or pass --bdevperf PATH)" if not args.bdevperf else ""))
    if not lib.is_file():
        missing.append(f"the mirror module {lib} does not exist "
                       "(run `cargo build --release` in the repo, or pass --lib PATH)")
    if missing:
        for m in missing:
            print(f"bench.py: refusing to run: {m}", file=sys.stderr)
        return 2
    lib = lib.resolve()

    notes: list[str] = []
    warn = stale_lib_warning(lib)
    if warn:
        print(warn, file=sys.stderr)
        notes.append(warn)
    # Preload a private copy: a `cargo build` in the repo during the run (tests, a colleague)
    # must not change the module between measurements.
    workdir = Path(tempfile.mkdtemp(prefix="spdk-mirror-bench-"))
    try:
        return run_all(args, lib, bdevperf, workdir, notes, ncpu)
    finally:
        if args.keep_logs:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
