"""Running bdevperf, and reading its output with the project's one parser of it: the library's
`spdk_mirror::bdevperf`, which the integration tests use directly, reached here through the
`spdk-mirror bdevperf-report` command (`cargo build --release` builds it beside the module).
`bench/test_bdevperf.py` and `tests/bdevperf_parse.rs` check it against real captured outputs in
`bench/fixtures/bdevperf/`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .cpu import io_phase_cpu, supervise
from .systems import Row, System, cores_of

MEM_MB = 1024  # DPDK memory (-s) per bdevperf process
REPO = Path(__file__).resolve().parents[2]


def report_command() -> Path:
    """The `spdk-mirror` executable: SPDK_MIRROR_BIN, else the release build of this repository
    (under CARGO_TARGET_DIR when set)."""
    explicit = os.environ.get("SPDK_MIRROR_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "release" / "spdk-mirror"


def parse_bdevperf(text: str) -> dict:
    """What a bdevperf run printed, as the library's parser reads it (`BdevperfResult::report`):
    `total` (`iops`, `mib_s`, `fail_s`, `to_s`, `avg_us`, `min_us`, `max_us`; None without a
    Total row), `jobs` (`name`, `runtime_s`, `iops`, `mib_s`, `avg_us`), `failures`, `p99_us`
    (from the `-ll` histograms of all jobs merged, else the worst job's `-l` summary, else None),
    `p99_source`, `job_p99_us`, and `histogram_ios` when there was a histogram."""
    cmd = report_command()
    if not cmd.is_file():
        raise RuntimeError(f"{cmd} is missing: build it with `cargo build --release` "
                           "(or name it with SPDK_MIRROR_BIN)")
    out = subprocess.run([str(cmd), "bdevperf-report"], input=text.encode(errors="replace"),
                         capture_output=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd} bdevperf-report failed: {out.stderr.decode(errors='replace')}")
    return json.loads(out.stdout)


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
