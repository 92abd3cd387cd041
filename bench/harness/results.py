"""Collected samples, failures and supervisor statistics, and the summary computed from them.

A sample is one measured value: (workload, case, metric, x, variant, rep, value). `x` is the
message size for curves (NetPIPE, the sweep) and None otherwise. Metrics declare their unit and
whether higher or lower is better, so ratios can always be read as "relative performance":
> 1 means faster than the baseline (plain TCP, or the native run for the syscall benchmark).
"""

import json
import re
import statistics
import sys
import time


def parse_trace_stats(text):
    """The counts of a `slipstream-trace --stats` summary (None where a count is missing) and the
    text itself ("raw")."""
    entry = {"raw": text.strip()}
    for key, pattern in (("seen", r"connections seen (\d+)"), ("switched", r"switched (\d+)"),
                         ("relayed", r"relayed (\d+)"), ("left_on_tcp", r"left on TCP (\d+)"),
                         ("trapped_calls", r"total\s+(\d+)")):
        m = re.search(pattern, text)
        entry[key] = int(m.group(1)) if m else None
    return entry


class Results:
    def __init__(self, log_path):
        self.samples = []
        self.metrics = {}  # (workload, metric) -> {"unit", "better", "label"}
        self.workloads = {}  # name -> {"description", "baseline", "variants", "commands", "notes"}
        self.failures = []
        self.exclusions = []
        self.trace_stats = []
        self.curves = {}  # (workload, case, variant, rep) -> raw points, kept for the JSON file
        self._log = open(log_path, "a", buffering=1)
        self._t0 = time.time()

    def log(self, msg):
        line = f"[{time.time() - self._t0:7.1f}s] {msg}"
        print(line, file=sys.stderr, flush=True)
        self._log.write(line + "\n")

    # ---- recording ---------------------------------------------------------------------------

    def declare_workload(self, name, description, baseline, variants):
        self.workloads[name] = {"description": description, "baseline": baseline,
                                "variants": list(variants), "commands": {}, "notes": []}

    def declare_metric(self, workload, metric, unit, better, label=None):
        self.metrics[(workload, metric)] = {"unit": unit, "better": better, "label": label or metric}

    def note(self, workload, text):
        if text in self.workloads[workload]["notes"]:
            return
        self.workloads[workload]["notes"].append(text)
        self.log(f"[{workload}] note: {text}")

    def command(self, workload, variant, role, argv_text):
        """Remembers one example command line per (variant, role) for the report."""
        self.workloads[workload]["commands"].setdefault(f"{variant} {role}", argv_text)

    def add(self, workload, case, metric, variant, rep, value, x=None):
        self.samples.append({"workload": workload, "case": case, "metric": metric, "x": x,
                             "variant": variant, "rep": rep, "value": value})

    def fail(self, workload, case, variant, rep, err):
        entry = {"workload": workload, "case": case, "variant": variant, "rep": rep,
                 "symptom": err.symptom, "command": err.command, "log_tail": err.log_tail}
        self.failures.append(entry)
        self.log(f"[{workload}] FAILED {case} {variant} rep {rep}: {err.symptom}\n"
                 f"    command: {err.command}\n" + "".join(f"    | {l}\n" for l in err.log_tail.splitlines()[-8:]))

    def exclude(self, workload, case, variant, reason):
        self.exclusions.append({"workload": workload, "case": case, "variant": variant, "reason": reason})
        self.log(f"[{workload}] EXCLUDED {variant} ({case or 'all cases'}): {reason}")

    def add_trace_stats(self, workload, case, variant, rep, role, path):
        """Parses the --stats summary slipstream-trace wrote to `path` (missing file: nothing)."""
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            return None
        entry = {"workload": workload, "case": case, "variant": variant, "rep": rep, "role": role,
                 **parse_trace_stats(text)}
        self.trace_stats.append(entry)
        return entry

    # ---- summary -----------------------------------------------------------------------------

    def summary(self):
        """Median, min, max and n per (workload, case, metric, x, variant), plus relative
        performance against the workload's baseline (and slipstream against unix)."""
        groups = {}
        for s in self.samples:
            if s["value"] is None:
                continue
            key = (s["workload"], s["case"], s["metric"], s["x"])
            groups.setdefault(key, {}).setdefault(s["variant"], []).append(s["value"])
        rows = []
        for (wl, case, metric, x), by_variant in groups.items():
            meta = self.metrics.get((wl, metric), {"unit": "", "better": "higher", "label": metric})
            baseline = self.workloads.get(wl, {}).get("baseline", "tcp")
            stats = {}
            for variant, values in by_variant.items():
                stats[variant] = {"median": statistics.median(values), "min": min(values),
                                  "max": max(values), "n": len(values)}

            def perf(v):
                m = stats[v]["median"]
                if meta["better"] == "higher":
                    return m
                return 1.0 / m if m else None

            rel = {}
            if baseline in stats and perf(baseline):
                for variant in stats:
                    if variant != baseline and perf(variant) is not None:
                        rel[variant] = perf(variant) / perf(baseline)
            if "slipstream" in stats and "unix" in stats and perf("unix"):
                rel["slipstream/unix"] = perf("slipstream") / perf("unix")
            rows.append({"workload": wl, "case": case, "metric": metric, "x": x, "unit": meta["unit"],
                         "better": meta["better"], "label": meta["label"], "baseline": baseline,
                         "stats": stats, "relative": rel})
        return rows

    def switch_summary(self):
        """Per (workload, variant, role): connections seen and switched, summed over samples."""
        out = {}
        for e in self.trace_stats:
            key = (e["workload"], e["variant"], e["role"])
            agg = out.setdefault(key, {"processes": 0, "seen": 0, "switched": 0, "relayed": 0,
                                       "left_on_tcp": 0, "trapped_calls": 0})
            agg["processes"] += 1
            for k in ("seen", "switched", "relayed", "left_on_tcp", "trapped_calls"):
                agg[k] += e.get(k) or 0
        return [{"workload": k[0], "variant": k[1], "role": k[2], **v} for k, v in sorted(out.items())]

    def to_json(self, path, run_info, machine):
        doc = {
            "run": run_info,
            "machine": machine,
            "workloads": self.workloads,
            "metrics": [{"workload": w, "metric": m, **meta} for (w, m), meta in self.metrics.items()],
            "summary": self.summary(),
            "switching": self.switch_summary(),
            "failures": self.failures,
            "exclusions": self.exclusions,
            "trace_stats": self.trace_stats,
            "samples": self.samples,
            "curves": [{"workload": k[0], "case": k[1], "variant": k[2], "rep": k[3], "points": v}
                       for k, v in self.curves.items()],
        }
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
        return doc
