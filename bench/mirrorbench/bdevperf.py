"""Running bdevperf, and the bench's one parser of its output (`parse_bdevperf`), used by the
benchmark and the pressure sweep alike. `bench/test_bdevperf.py` checks it against real captured
outputs in `bench/fixtures/bdevperf/`; see bench/README.md for how it relates to the tests'
parser (tests/support, Rust)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from .cpu import io_phase_cpu, supervise
from .systems import Row, System, cores_of

MEM_MB = 1024  # DPDK memory (-s) per bdevperf process
P99 = 99.0

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

    With `-S` the table is printed periodically; as in the tests' parser (tests/support), the
    last block wins: the job rows since the previous Total, up to the last Total.
    """
    lines = text.replace("\r", "\n").splitlines()
    res: dict = {"total": None, "jobs": [], "p99_us": None, "p99_source": None,
                 "job_p99_us": [], "failures": 0}
    section = None
    block: list[dict] = []  # job rows since the last Total
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
                res["jobs"], block = block, []
                continue
            m = JOB_ROW_RE.match(line)
            if m:
                n = [float(x) for x in m.group(2).split()]
                block.append({"name": m.group(1), "runtime_s": n[0], "iops": n[1],
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
    if res["total"] is None:
        res["jobs"] = block  # the partial table of an interrupted run
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
