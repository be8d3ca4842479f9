"""The benchmark's command line: runs the matrix (every system of every row, `--repeat` times,
interleaved), writes the results, or re-renders them from a results JSON (`--replot`)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .bdevperf import MEM_MB, run_bdevperf
from .report import CPU_FAIR_PCT, bitmap_cost_lines, fmt, markdown, summarize, text_table
from .spdk_apps import REPO, file_sha256, find_apps_or_refuse, machine_info, stale_lib_warning
from .svg import svg_chart
from .systems import build_rows

DEFAULT_LIB = REPO / "target" / "release" / "libspdk_mirror.so"
RESULTS_DIR = REPO / "bench" / "results"


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
    bdevperf = find_apps_or_refuse("bench.py", args.bdevperf, lib)
    if bdevperf is None:
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
