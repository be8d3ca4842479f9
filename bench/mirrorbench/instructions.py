"""Instructions per I/O: the mirror and SPDK's own RAID side by side under
`valgrind --tool=callgrind`, one core, 4K QD128 over null legs (the README's *Instructions per
I/O* and *Where the floor is*). An instruction count does not move with a shared machine's load,
so it separates what a change does from the noise that IOPS carry here.

    cargo build --release && python3 bench/instructions.py [--short 1] [--long 3] [--only TEXT]

Each stack runs twice, for `--short` and `--long` seconds; start-up and shut-down cost the same
in both, so the difference of the two counts over the difference of the I/Os completed is the
cost of one I/O. It is reported for the whole process and for the objects that matter: the
module itself, `libspdk_bdev_raid`, and SPDK's bdev layer (`libspdk_bdev`). Under callgrind a
run is about 50 times slower: a full run takes about 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from .bdevperf import MEM_MB, parse_bdevperf
from .spdk_apps import REPO, file_sha256, find_apps_or_refuse, stale_lib_warning
from .systems import (RANDREAD_4K, RANDWRITE_4K, System, Workload, mirror_raid1, mirror_raid10,
                      spdk_raid0_over_raid1, spdk_raid1)

# (row label, workload, the mirror's stacks first, the reference last)
ROWS = [
    ("raid1, 2 null legs", RANDWRITE_4K,
     [mirror_raid1("null"), mirror_raid1("null", bitmap=False), spdk_raid1("null")]),
    ("raid1, 2 null legs", RANDREAD_4K, [mirror_raid1("null"), spdk_raid1("null")]),
    ("raid10 n2, 4 null legs", RANDWRITE_4K, [mirror_raid10(), spdk_raid0_over_raid1()]),
    ("raid10 n2, 4 null legs", RANDREAD_4K, [mirror_raid10(), spdk_raid0_over_raid1()]),
]

# The objects reported on their own, by a part of their file name.
OBJECTS = {"bdev layer": "libspdk_bdev.so", "SPDK raid": "libspdk_bdev_raid.so"}


def self_cost_by_object(path: Path) -> tuple[int, Counter]:
    """The total instructions of a callgrind output file (written with
    `--compress-strings=no`) and each object's own (self) share of them. A cost line right
    after `calls=` is a call's inclusive cost, counted in the callee: skipped."""
    per_object: Counter = Counter()
    total = None
    obj = ""
    after_call = False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                    continue
                per_object[obj] += int(line.split()[-1])
            elif line.startswith(("totals:", "summary:")):
                total = int(line.split()[1])
    if total is None:
        total = sum(per_object.values())
    return total, per_object


def per_io(short: tuple[int, int, Counter], long: tuple[int, int, Counter], lib_name: str) -> dict:
    """Instructions per I/O from a short and a long run, each (I/Os, total, per object)."""
    ios = long[0] - short[0]
    if ios <= 0:
        raise RuntimeError(f"the long run completed no more I/Os than the short one ({long[0]} <= {short[0]})")

    def share(part: str) -> float:
        def of(objects: Counter) -> int:
            return sum(v for k, v in objects.items() if Path(k).name.startswith(part))
        return (of(long[2]) - of(short[2])) / ios

    out = {"total": (long[1] - short[1]) / ios, "module": share(lib_name)}
    for label, part in OBJECTS.items():
        out[label] = share(part)
    return out


def count(bdevperf: Path, lib: Path, system: System, workload: Workload, seconds: int,
          workdir: Path, tag: str) -> tuple[int, int, Counter]:
    """One run under callgrind: (I/Os completed, instructions, instructions per object)."""
    cfg = workdir / f"{tag}.json"
    cfg.write_text(json.dumps({"subsystems": [{"subsystem": "bdev", "config": list(system.config)}]}))
    out_file = workdir / f"{tag}.callgrind"
    cmd = ["valgrind", "--tool=callgrind", "--compress-strings=no", f"--callgrind-out-file={out_file}",
           str(bdevperf), "--no-huge", "-s", str(MEM_MB), "--no-pci", "-m", "0x1",
           "--disable-cpumask-locks", "-r", str(workdir / f"{tag}.sock"), "-c", str(cfg),
           "-q", str(workload.qd), "-o", str(workload.io_size), "-w", workload.rw,
           "-t", str(seconds), "-T", system.target]
    env = dict(os.environ, LD_PRELOAD=str(lib))
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60 * seconds + 300,
                         stdin=subprocess.DEVNULL)
    text = run.stdout + run.stderr
    parsed = parse_bdevperf(text)
    if run.returncode != 0 or parsed["total"] is None or parsed["total"]["fail_s"] > 0:
        tail = "\n".join(text.replace("\r", "\n").splitlines()[-15:])
        raise RuntimeError(f"{system.label}, {workload.label}: bdevperf under callgrind failed "
                           f"(exit {run.returncode}):\n{tail}")
    ios = round(sum(j["iops"] * j["runtime_s"] for j in parsed["jobs"]))
    total, objects = self_cost_by_object(out_file)
    out_file.unlink()
    return ios, total, objects


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", type=int, default=1, help="seconds of the short run (default 1)")
    ap.add_argument("--long", type=int, default=3, help="seconds of the long run (default 3)")
    ap.add_argument("--only", default="", help="only the rows whose 'stack | workload' contains this")
    ap.add_argument("--lib", default=str(REPO / "target" / "release" / "libspdk_mirror.so"))
    ap.add_argument("--bdevperf", default=None, help="SPDK's bdevperf (default: found as the bench finds it)")
    args = ap.parse_args(argv)
    if args.short < 1 or args.long <= args.short:
        print("instructions.py: --short must be at least 1 and --long longer than --short", file=sys.stderr)
        return 2
    if not shutil.which("valgrind"):
        print("instructions.py: refusing to run: valgrind is not installed (Debian: apt install valgrind)",
              file=sys.stderr)
        return 2
    src = Path(args.lib)
    bdevperf = find_apps_or_refuse("instructions.py", args.bdevperf, src)
    if bdevperf is None:
        return 2
    if warning := stale_lib_warning(src):
        print(warning, file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mirror-instr-") as tmp:
        workdir = Path(tmp)
        # A private copy: a rebuild meanwhile cannot change the module between runs.
        lib = workdir / src.name
        shutil.copy2(src, lib)
        print(f"module {src} (sha256 {file_sha256(lib)[:16]}), bdevperf {bdevperf}, "
              f"{args.short} s and {args.long} s runs\n")
        print("| stack | workload | system | instructions per I/O | module's own | SPDK raid's own "
              "| bdev layer | reference / this |")
        print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for n, (stack, workload, systems) in enumerate(ROWS):
            if args.only not in f"{stack} | {workload.label}":
                continue
            counts = []
            for k, system in enumerate(systems):
                tag = f"r{n}s{k}"
                short = count(bdevperf, lib, system, workload, args.short, workdir, tag + "a")
                long = count(bdevperf, lib, system, workload, args.long, workdir, tag + "b")
                counts.append((system, per_io(short, long, lib.name)))
            ref = counts[-1][1]["total"]
            for system, c in counts:
                print(f"| {stack} | {workload.label} | {system.label} | {c['total']:,.0f} | {c['module']:,.0f} "
                      f"| {c['SPDK raid']:,.0f} | {c['bdev layer']:,.0f} | {ref / c['total']:.3f} |", flush=True)
    return 0
