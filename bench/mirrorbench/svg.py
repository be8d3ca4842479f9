"""The hand-written SVG bar chart of IOPS (no plotting library: the bench is standard library only)."""

from __future__ import annotations

from xml.sax.saxutils import escape


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
