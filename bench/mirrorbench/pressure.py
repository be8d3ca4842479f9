"""The pressure sweep: the mirror and SPDK's raid1 side by side with SPDK's `spdk_bdev_io` pool
starved (`bdev_set_options` before init), bdevperf verify QD128 straight on each over two malloc
legs, one core. For each pool size and per-thread cache it prints IOPS of both, their ratio, and
the mirror's no-memory counters (children refused an `spdk_bdev_io`, children that found their
leg's context pool empty), as a markdown table.

    cargo build --release && python3 bench/pressure.py [--time 3] [--pools 16,32,64,128,256] [--caches 1,16] [--repeat 1]

Python standard library only; SPDK's bdevperf is found as the benchmark finds it (spdk_apps). The
two systems run back to back for each pool size, so compare the ratio, not absolute numbers
across runs. With `--repeat N` they alternate N times per row: the row shows the medians, their
ratio, and the lowest and highest ratio of the N back-to-back pairs (on a shared machine one
pair moves by several per cent).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .bdevperf import parse_bdevperf
from .spdk_apps import REPO, find_apps_or_refuse

LEG_BLOCKS = 65536  # 32 MiB malloc legs of 512-byte blocks


def config(system: str, pool: int, cache: int) -> dict:
    legs = [{"method": "bdev_malloc_create",
             "params": {"name": f"m{i}", "num_blocks": LEG_BLOCKS, "block_size": 512}} for i in range(2)]
    if system == "mirror":
        top = {"method": "bdev_mirror_create",
               "params": {"name": "t", "level": "raid1", "base_bdevs": ["m0", "m1"]}}
    else:
        top = {"method": "bdev_raid_create",
               "params": {"name": "t", "raid_level": "raid1", "base_bdevs": ["m0", "m1"]}}
    opts = {"method": "bdev_set_options",
            "params": {"bdev_io_pool_size": pool, "bdev_io_cache_size": cache}}
    return {"subsystems": [{"subsystem": "bdev", "config": [opts, *legs, top]}]}


def rpc(sock: Path, method: str, params: dict | None = None, timeout: float = 120) -> dict:
    """One JSON-RPC call over the app's Unix socket."""
    req = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        req["params"] = params
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(json.dumps(req).encode())
        buf = b""
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise RuntimeError(f"{method}: connection closed")
            buf += chunk
            try:
                return json.loads(buf)
            except json.JSONDecodeError:
                continue


def wait_socket(sock: Path, proc: subprocess.Popen, limit: float = 60) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("bdevperf exited during start-up")
        if sock.exists():
            try:
                rpc(sock, "spdk_get_version", timeout=5)
                return
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError("bdevperf did not start")


def measure(bdevperf: Path, lib: Path, system: str, pool: int, cache: int, secs: int,
            work: Path) -> dict:
    """One bdevperf -z run; returns IOPS, failures, whether it finished, and the mirror's counters."""
    cfg = work / f"{system}-{pool}-{cache}.json"
    cfg.write_text(json.dumps(config(system, pool, cache)))
    sock = work / "bp.sock"
    log = work / f"{system}-{pool}-{cache}.log"
    if sock.exists():
        sock.unlink()
    cmd = [str(bdevperf), "--no-huge", "-s", "1024", "--no-pci", "-m", "0x1",
           "--disable-cpumask-locks", "-r", str(sock), "-c", str(cfg), "-q", "128", "-o", "4096",
           "-w", "verify", "-t", str(secs), "-T", "t", "-z"]
    env = dict(os.environ, LD_PRELOAD=str(lib))
    out = {"iops": None, "failed": None, "finished": False, "nomem": None, "pool_empty": None}
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        wait_socket(sock, proc)
        r = rpc(sock, "perform_tests", timeout=secs + 60)
        job = (r.get("result") or {}).get("results", [{}])[0]
        out.update(iops=job.get("iops"), failed=job.get("io_failed"),
                   finished=job.get("status") == "finished")
        if system == "mirror":
            legs = rpc(sock, "bdev_mirror_get_bdevs", {"name": "t"})["result"][0]["legs"]
            out["nomem"] = sum(leg["nomem"] for leg in legs)
            out["pool_empty"] = sum(leg["pool_empty"] for leg in legs)
    except (RuntimeError, OSError, KeyError, IndexError) as e:
        out["error"] = str(e)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if out["iops"] is None:
        out["iops"] = (parse_bdevperf(log.read_text(errors="replace")).get("total") or {}).get("iops")
    return out


def median(values: list) -> float | None:
    """The median of the values measured (None where a run gave none); None if none was."""
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def cell(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time", type=int, default=3, help="seconds per measurement")
    ap.add_argument("--pools", default="16,32,64,128,256", help="bdev_io_pool_size values")
    ap.add_argument("--caches", default="1,16", help="bdev_io_cache_size values")
    ap.add_argument("--repeat", type=int, default=1, help="mirror/raid1 pairs per row (medians shown)")
    ap.add_argument("--bdevperf", help="path to SPDK's bdevperf")
    ap.add_argument("--lib", default=str(REPO / "target/release/libspdk_mirror.so"))
    args = ap.parse_args(argv)
    lib = Path(args.lib)
    bdevperf = find_apps_or_refuse("pressure.py", args.bdevperf, lib)
    if bdevperf is None:
        return 2
    if args.repeat < 1:
        print("--repeat: must be at least 1", file=sys.stderr)
        return 2
    pairs = args.repeat > 1
    print("| pool | cache | mirror IOPS | SPDK raid1 IOPS | ratio |" + (" pair ratios |" if pairs else "")
          + " mirror nomem | mirror pool_empty |")
    print("| ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if pairs else "") + " ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="mirror-pressure-") as d:
        work = Path(d)
        for cache in (int(c) for c in args.caches.split(",")):
            for pool in (int(p) for p in args.pools.split(",")):
                if pool < cache * 3:
                    continue  # SPDK refuses a pool below cache x (threads + 1)
                runs = [(measure(bdevperf, lib, "mirror", pool, cache, args.time, work),
                         measure(bdevperf, lib, "raid1", pool, cache, args.time, work))
                        for _ in range(args.repeat)]
                m = {k: median([mr[0][k] for mr in runs]) for k in ("iops", "nomem", "pool_empty")}
                r_iops = median([mr[1]["iops"] for mr in runs])
                ratio = m["iops"] / r_iops if m["iops"] and r_iops else None
                each = [a["iops"] / b["iops"] for a, b in runs if a["iops"] and b["iops"]]
                spread = f" {min(each):.2f}-{max(each):.2f} |" if pairs and each else (" — |" if pairs else "")
                bad = [a for a, _ in runs if not a["finished"] or a["failed"]]
                note = f" (mirror: {bad[0].get('error') or 'failed I/O'})" if bad else ""
                print(f"| {pool} | {cache} | {cell(m['iops'], ',.0f')} | {cell(r_iops, ',.0f')} | "
                      f"{cell(ratio, '.2f')} |{spread} {cell(m['nomem'], ',.0f')} | {cell(m['pool_empty'], ',.0f')} |{note}",
                      flush=True)
    return 0

