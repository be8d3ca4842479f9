"""Results: one line per (row, system) with medians over the repeats and the ratios to the row's
reference, as a text table (printed) and a markdown report."""

from __future__ import annotations

import argparse
import statistics

from .systems import NO_BITMAP, Row


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

