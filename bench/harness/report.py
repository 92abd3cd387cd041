"""Markdown summary and gnuplot plots, made from the run's JSON document alone (so a finished
run can be re-rendered with `bench/run --report-only DIR`)."""

import math
import os
import shutil
import subprocess

from .context import VARIANT_ORDER

# Sizes shown in tables for the curve workloads (all sizes are in the JSON and the plots).
TABLE_SIZES = [1, 64, 1024, 16384, 65536, 1048576, 4194304]
REL_COLUMNS = [("slipstream", "slipstream ×tcp"), ("no-preload", "no-preload ×tcp"), ("unix", "unix ×tcp"),
               ("slipstream/unix", "slipstream ×unix"),
               ("client-only", "client-only ×tcp"), ("server-only", "server-only ×tcp")]
COLORS = {"tcp": "#444444", "slipstream": "#d62728", "no-preload": "#9467bd", "client-only": "#ff7f0e",
          "server-only": "#bcbd22",
          "unix": "#1f77b4", "native": "#444444", "floor": "#2ca02c"}


def fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    a = abs(v)
    if a >= 10000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def fmt_size(n):
    if n is None:
        return ""
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def cell(stats):
    if not stats:
        return "–"
    if stats["n"] == 1:
        return fmt(stats["median"])
    return f"{fmt(stats['median'])} [{fmt(stats['min'])}–{fmt(stats['max'])}]"


def _case_order(doc, wl):
    order = []
    for s in doc["samples"]:
        if s["workload"] == wl and s["case"] not in order:
            order.append(s["case"])
    return order


def _rows_for(doc, wl):
    rows = [r for r in doc["summary"] if r["workload"] == wl]
    cases = _case_order(doc, wl)
    metrics = [m["metric"] for m in doc["metrics"] if m["workload"] == wl]
    rows.sort(key=lambda r: (cases.index(r["case"]) if r["case"] in cases else 99,
                             metrics.index(r["metric"]) if r["metric"] in metrics else 99, r["x"] or 0))
    return rows


def variants_of(doc, wl):
    return [v for v in VARIANT_ORDER if v in doc["workloads"][wl]["variants"]]


HEADLINE_SIZES = [1, 1024, 65536, 1048576, 4194304]
HEADLINE_VARIANTS = ["tcp", "slipstream", "no-preload", "client-only", "server-only", "unix"]


def _geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def headline(doc):
    """One row per workload case on its primary metric (throughput at a few sizes for the curve
    workloads), plus the geometric mean of the ratios below 64 KiB, the paper's NetPIPE range."""
    present = {v for meta in doc["workloads"].values() for v in meta["variants"]}
    variants = [v for v in HEADLINE_VARIANTS if v in present]
    rel_cols = [(k, label) for k, label in REL_COLUMNS if k in present or k == "slipstream/unix"]
    head = ["workload", "case", "unit"] + variants + [label for _, label in rel_cols]
    out = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for wl in doc["workloads"]:
        if wl == "syscalls":
            continue
        metrics = [m["metric"] for m in doc["metrics"] if m["workload"] == wl]
        if not metrics:
            continue
        rows = [r for r in _rows_for(doc, wl) if r["metric"] == metrics[0]]
        for r in rows:
            if r["x"] is not None and r["x"] not in HEADLINE_SIZES:
                continue
            case = (r["case"] or "") + (f" @ {fmt_size(r['x'])}" if r["x"] is not None else "")
            cells = [wl, case, r["unit"]] + [fmt(r["stats"][v]["median"]) if v in r["stats"] else "–"
                                             for v in variants]
            cells += [(fmt(r["relative"][k]) + "×") if k in r["relative"] else "–" for k, _ in rel_cols]
            out.append("| " + " | ".join(cells) + " |")
        curve_cases = sorted({r["case"] for r in rows if r["x"] is not None}, key=str)
        for case in curve_cases:
            small = [r for r in rows if r["case"] == case and r["x"] is not None and r["x"] < 65536]
            gm = {k: _geomean([r["relative"].get(k) for r in small]) for k, _ in rel_cols}
            cells = [wl, f"{case}, geometric mean of all sizes < 64 KiB", "ratio"] + ["" for _ in variants]
            cells += [(fmt(gm[k]) + "×") if gm[k] else "–" for k, _ in rel_cols]
            out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def markdown(doc, plot_files):
    run, m = doc["run"], doc["machine"]
    out = [f"# Slipstream benchmark run {run['started']}", ""]
    out += [f"Command: `{run['command']}`  ", f"Profile: {run['profile']} ({run['reps']} repetitions, variants "
            f"interleaved), pinning: {run['pin']}, wall time {run.get('wall_seconds', 0):.0f} s  ",
            f"Machine: {m['cpu_model']}, {m['cpus_usable']} CPUs, {m['memory_mib']} MiB, {m['distro']}, "
            f"Linux {m['kernel']}" + (f", hypervisor {m['hypervisor']}" if m.get("hypervisor") else "") + "  ",
            f"Load average at start {m['loadavg_start']}, at end {run.get('loadavg_end')}  ",
            f"Slipstream: {m.get('slipstream_trace')}, commit {m['git'].get('describe')}"
            + (f" (+{len(m['git']['dirty'])} uncommitted changes in the tree)" if m["git"].get("dirty") else ""),
            ""]
    out += ["Cells are `median [min–max]` over the repetitions. `×tcp` columns are relative performance "
            "against plain TCP measured in the same run (> 1 = faster; for latencies the inverse ratio "
            "is used, so > 1 still means better). `slipstream ×unix` compares the switched path with "
            "the program's native AF_UNIX mode.", ""]

    sw = doc.get("switching") or []
    if sw:
        out += ["## Did connections switch?", "",
                "From `slipstream-trace --stats`, summed over the run: servers for their whole life, "
                "clients in the unrecorded warm-up sample only (--stats makes slipstream-trace trap "
                "socket() as well, so measured client runs go without it).", "",
                "| workload | variant | side | processes | connections seen | switched | relayed | left on TCP "
                "| trapped calls |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for e in sw:
            out.append(f"| {e['workload']} | {e['variant']} | {e['role']} | {e['processes']} | {e['seen']} | "
                       f"{e['switched']} | {e['relayed']} | {e['left_on_tcp']} | {e['trapped_calls']} |")
        out.append("")

    out += ["## Headline", "", "Median of each variant on each workload's main metric; `×` columns are "
            "relative performance (> 1 = faster than plain TCP).", ""] + headline(doc)
    out += ["## Results", ""]
    for wl, meta in doc["workloads"].items():
        out += [f"### {wl}", "", meta["description"], ""]
        rows = _rows_for(doc, wl)
        if not rows:
            out += ["No results (see failures below).", ""]
            continue
        if wl == "syscalls":
            out += _syscall_table(rows)
        else:
            out += _table(doc, wl, rows)
        for note in meta.get("notes", []):
            out.append("- " + " ".join(note.split()))
        if meta.get("notes"):
            out.append("")
        for f in plot_files.get(wl, []):
            out += [f"![{wl}](plots/{os.path.basename(f)})", ""]
    if plot_files.get("_ratios"):
        out += ["### Relative performance, all workloads", "", f"![ratios](plots/{os.path.basename(plot_files['_ratios'][0])})", ""]

    if doc["failures"] or doc["exclusions"]:
        out += ["## Failures and exclusions", ""]
        for f in doc["failures"]:
            out += [f"- **{f['workload']}** {f['case'] or ''} `{f['variant']}` rep {f['rep']}: {f['symptom']}  ",
                    f"  command: `{f['command']}`"]
            if f.get("log_tail"):
                out += ["  ```", *["  " + l for l in f["log_tail"].strip().splitlines()[-6:]], "  ```"]
        for e in doc["exclusions"]:
            out.append(f"- excluded **{e['workload']}** {e['case'] or '(all cases)'} `{e['variant']}`: {e['reason']}")
        out.append("")
    if run.get("leftovers"):
        out += ["## Processes ended at clean-up", ""] + [f"- {x}" for x in run["leftovers"]] + [""]
    out += ["## Commands", ""]
    for wl, meta in doc["workloads"].items():
        for key, cmd in sorted(meta.get("commands", {}).items()):
            out.append(f"- {wl} / {key}: `{cmd}`")
    out.append("")
    return "\n".join(out)


def _table(doc, wl, rows):
    variants = variants_of(doc, wl)
    rels = [(k, label) for k, label in REL_COLUMNS if (k in variants or k == "slipstream/unix")
            and any(k in r["relative"] for r in rows)]
    head = ["case", "metric"] + variants + [label for _, label in rels]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for r in rows:
        if r["x"] is not None and r["x"] not in TABLE_SIZES:
            continue
        metric = r["label"] + (f" @ {fmt_size(r['x'])}" if r["x"] is not None else "")
        cells = [r["case"] or "", f"{metric} ({r['unit']})"]
        cells += [cell(r["stats"].get(v)) for v in variants]
        cells += [(fmt(r["relative"][k]) + "×") if k in r["relative"] else "–" for k, _ in rels]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def _syscall_table(rows):
    # no-preload and floor appear when the run had them: with the preload library getsockname is
    # served in the program, so only no-preload shows a trapped call, beside the floor's.
    extra = [v for v in ("no-preload", "floor") if any(v in r["stats"] for r in rows)]
    out = ["| call | native (ns) | slipstream (ns) | " + "".join(f"{v} (ns) | " for v in extra) +
           "slipstream ÷ native (time) |", "|---|---:|---:|" + "---:|" * len(extra) + "---:|"]
    trapped = floor_line = None
    for r in rows:
        n, s = r["stats"].get("native"), r["stats"].get("slipstream")
        ratio = s["median"] / n["median"] if n and s and n["median"] else None
        extra_cells = "".join(f"{cell(r['stats'].get(v))} | " for v in extra)
        out.append(f"| {r['case']} | {cell(n)} | {cell(s)} | {extra_cells}{fmt(ratio)}{'×' if ratio else ''} |")
        if r["case"] != "getsockname_tcp" or not n:
            continue
        sup = r["stats"].get("no-preload") or s
        if sup:
            trapped = (sup["median"] - n["median"]) / 1000
        fl = r["stats"].get("floor")
        if sup and fl and fl["median"]:
            floor_line = (f"Trapped getsockname ({'no-preload' if 'no-preload' in r['stats'] else 'slipstream'}) "
                          f"**{sup['median'] / 1000:.1f} µs** against the bare notification round trip "
                          f"(floor) **{fl['median'] / 1000:.1f} µs**: "
                          f"**{sup['median'] / fl['median']:.2f}× the floor**.")
    out.append("")
    if trapped is not None:
        out += [f"Cost of one trapped call (getsockname on a TCP socket, supervised minus native): "
                f"**{trapped:.1f} µs**.", ""]
    if floor_line:
        out += [floor_line, ""]
    return out


# ---- plots ---------------------------------------------------------------------------------------

def _gnuplot(script, path):
    with open(path + ".gp", "w") as f:
        f.write(script)
    r = subprocess.run(["gnuplot", path + ".gp"], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"gnuplot failed for {path}: {r.stderr.strip()[:500]}")
        return None
    return path


SIZE_TICS = ", ".join(f'"{label}" {n}' for label, n in (
    ("1", 1), ("4", 4), ("16", 16), ("64", 64), ("256", 256), ("1K", 1 << 10), ("4K", 1 << 12), ("16K", 1 << 14),
    ("64K", 1 << 16), ("256K", 1 << 18), ("1M", 1 << 20), ("4M", 1 << 22), ("16M", 1 << 24)))


def _curve_plot(doc, base, title, ylabel, variants, xs, columns, logy=False, hline=None):
    """Lines vs message size (log x), one per variant; columns[v] is a list aligned with xs."""
    with open(base + ".dat", "w") as f:
        f.write("# size " + " ".join(variants) + "\n")
        for i, x in enumerate(xs):
            vals = [columns[v][i] for v in variants]
            f.write(f"{x} " + " ".join("NaN" if v is None else f"{v:.6g}" for v in vals) + "\n")
    plots = ", ".join(
        f"'{base}.dat' using 1:{i + 2} with linespoints lw 2 pt 7 ps 0.5 lc rgb '{COLORS.get(v, '#000')}' title '{v}'"
        for i, v in enumerate(variants))
    extra = "set logscale y 10\n" if logy else "set yrange [0:*]\n"
    if hline is not None:
        extra += f"set arrow from graph 0, first {hline} to graph 1, first {hline} nohead dt 2 lc rgb '#000000'\n"
    script = f"""set terminal pngcairo size 900,560 font "sans,10"
set output '{base}.png'
set title "{title}\\n(median of {doc['run']['reps']} runs; {doc['machine']['cpu_model']}, {doc['machine']['cpus_usable']} CPUs, Linux {doc['machine']['kernel']})" noenhanced
set logscale x 2
set xtics ({SIZE_TICS})
{extra}set xlabel "message size (bytes)"
set ylabel "{ylabel}"
set grid
set key top left
plot {plots}
"""
    return _gnuplot(script, base)


def _curve_plots(doc, wl, plot_dir):
    """Per case: throughput and latency vs size (the paper's Figure 5 style), and throughput
    relative to plain TCP vs size."""
    files = []
    rows = [r for r in doc["summary"] if r["workload"] == wl and r["x"] is not None]
    variants = variants_of(doc, wl)
    name = {"netpipe": "NetPIPE NPtcp", "sweep": "ss-sweep", "netns": "ss-sweep across namespaces"}.get(wl, wl)
    for case in _case_order(doc, wl):
        for metric in ("throughput", "latency"):
            sel = sorted((r for r in rows if r["case"] == case and r["metric"] == metric), key=lambda r: r["x"])
            if not sel:
                continue
            xs = [r["x"] for r in sel]
            cols = {v: [r["stats"][v]["median"] if v in r["stats"] else None for r in sel] for v in variants}
            base = os.path.join(plot_dir, f"{wl}-{case}-{metric}")
            if _curve_plot(doc, base, f"{name} {case}: {metric}", f"{metric} ({sel[0]['unit']})", variants, xs, cols,
                           logy=metric == "latency"):
                files.append(base + ".png")
            if metric == "throughput":
                others = [v for v in variants if v != "tcp"]
                # Powers of two only: NetPIPE's +-3 B perturbation points make the ratio curve jagged.
                sel = [r for r in sel if r["x"] & (r["x"] - 1) == 0]
                xs = [r["x"] for r in sel]
                rel = {v: [r["relative"].get(v) for r in sel] for v in others}
                base = os.path.join(plot_dir, f"{wl}-{case}-relative")
                if others and _curve_plot(doc, base, f"{name} {case}: throughput relative to plain TCP",
                                          "throughput / plain TCP throughput", others, xs, rel, hline=1.0):
                    files.append(base + ".png")
    return files


def _bar_plot(path, labels, series, ylabel, title, logy=False, hline=1.0):
    with open(path + ".dat", "w") as f:
        f.write("# label " + " ".join(s for s, _ in series) + "\n")
        for i, label in enumerate(labels):
            vals = [vals[i] for _, vals in series]
            f.write(f'"{label}" ' + " ".join("NaN" if v is None else f"{v:.6g}" for v in vals) + "\n")
    plots = ", ".join(f"'{path}.dat' using {i + 2}{':xtic(1)' if i == 0 else ''} title '{name}' lc rgb "
                      f"'{COLORS.get(name, '#888')}'" for i, (name, _) in enumerate(series))
    width = max(900, 40 * len(labels) * max(1, len(series)) // 2 + 200)
    script = f"""set terminal pngcairo size {width},560 font "sans,10"
set output '{path}.png'
set title "{title}" noenhanced
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -40 noenhanced
set ylabel "{ylabel}"
set grid ytics
set key top right
{'set logscale y' if logy else 'set yrange [0:*]'}
set arrow from graph 0, first {hline} to graph 1, first {hline} nohead dt 2 lc rgb '#000000'
plot {plots}
"""
    return _gnuplot(script, path)


def _ratio_plot(doc, plot_dir):
    labels, cols = [], {}
    series_names = ["slipstream", "client-only", "server-only", "unix"]
    for wl in doc["workloads"]:
        if wl in ("syscalls", "netpipe", "sweep", "netns"):
            continue
        metrics = [m["metric"] for m in doc["metrics"] if m["workload"] == wl]
        if not metrics:
            continue
        for r in _rows_for(doc, wl):
            if r["metric"] != metrics[0] or r["x"] is not None:
                continue
            labels.append(f"{wl} {r['case'] or ''}".strip())
            for v in series_names:
                cols.setdefault(v, []).append(r["relative"].get(v))
    if not labels:
        return None
    series = [(v, cols[v]) for v in series_names if any(x is not None for x in cols.get(v, []))]
    return _bar_plot(os.path.join(plot_dir, "ratios"), labels, series, "relative performance vs plain TCP (> 1 = faster)",
                     f"Slipstream benchmark: median vs plain TCP, same run ({doc['run']['started']})")


def _syscall_plot(doc, plot_dir):
    rows = _rows_for(doc, "syscalls")
    labels, ratios = [], []
    for r in rows:
        n, s = r["stats"].get("native"), r["stats"].get("slipstream")
        if n and s and n["median"]:
            labels.append(r["case"])
            ratios.append(s["median"] / n["median"])
    if not labels:
        return None
    return _bar_plot(os.path.join(plot_dir, "syscalls"), labels, [("slipstream", ratios)],
                     "time under slipstream-trace / native time", "System call cost under slipstream-trace (ratio, log scale)",
                     logy=True)


def render(doc, out_dir):
    """Writes summary.md and plots/*.png into out_dir; returns the Markdown text."""
    plot_dir = os.path.join(out_dir, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    plot_files = {}
    if shutil.which("gnuplot"):
        for wl in doc["workloads"]:
            files = _curve_plots(doc, wl, plot_dir)
            if files:
                plot_files[wl] = files
        if "syscalls" in doc["workloads"]:
            f = _syscall_plot(doc, plot_dir)
            if f:
                plot_files["syscalls"] = [f + ".png"]
        f = _ratio_plot(doc, plot_dir)
        if f:
            plot_files["_ratios"] = [f + ".png"]
    text = markdown(doc, plot_files)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(text)
    return text
