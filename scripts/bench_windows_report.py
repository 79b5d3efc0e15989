#!/usr/bin/env python3
"""Turns the runs recorded by scripts/bench-windows.sh into a markdown table of medians.

usage: bench_windows_report.py RUNS.tsv EVENTS RESULTS.jsonl

RUNS.tsv columns: system, workers, run, rc (or "skip"), wall_s, stdout file, `time -v` file, note.
events/s comes from the last JSON line a system prints (`events_per_s`); when there is none it is
EVENTS / wall seconds, which includes process start, and the table marks it with `*`.
"""
import json
import statistics
import sys

# Peer checksum of the 1M-event set (peers/README.md), used when the Python oracle did not run.
KNOWN_CHECKSUMS = {1_000_000: {"w1_rows": 211446, "w1_count": 1000000, "w1_sum": 68103011.93,
                               "w2_rows": 1050085, "w2_mean_sum": 71518498.47}}
ORDER = ["rust-limit", "freshet-foundation", "freshet-w1w2", "python", "pyflink", "pathway", "bytewax"]


def last_json(path):
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def time_v(path):
    """Max RSS (MB) and CPU seconds from GNU time -v output."""
    rss = cpu = None
    try:
        with open(path, errors="replace") as f:
            for line in f:
                key, _, value = line.strip().rpartition(": ")
                if key == "Maximum resident set size (kbytes)":
                    rss = int(value) / 1024
                elif key in ("User time (seconds)", "System time (seconds)"):
                    cpu = (cpu or 0.0) + float(value)
    except (OSError, ValueError):
        pass
    return rss, cpu


def fmt_rate(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def main(runs_path, events, results_path):
    events = int(events)
    rows = {}  # (system, workers) -> {"runs": [...], "note": str}
    with open(runs_path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 8:
                continue
            system, workers, run, rc, wall, out, tim, note = parts[:8]
            row = rows.setdefault((system, int(workers)), {"runs": [], "note": ""})
            if rc == "skip":
                row["note"] = note
                continue
            rec = {"system": system, "workers": int(workers), "run": int(run), "rc": int(rc),
                   "wall_s": float(wall)}
            reported = last_json(out)
            rss, cpu = time_v(tim)
            if reported is not None:
                rec["reported"] = reported
            if isinstance(reported, dict) and isinstance(reported.get("events_per_s"), (int, float)):
                rec["events_per_s"], rec["rate_source"] = float(reported["events_per_s"]), "reported"
            elif rec["wall_s"] > 0:
                rec["events_per_s"], rec["rate_source"] = events / rec["wall_s"], "wall"
            reported_rss = reported.get("max_rss_mb") if isinstance(reported, dict) else None
            # JVM-backed peers report the RSS of their whole process tree, which time -v misses
            candidates = [x for x in (rss, reported_rss) if isinstance(x, (int, float))]
            rec["max_rss_mb"] = max(candidates) if candidates else None
            rec["cpu_s"] = cpu
            if isinstance(reported, dict) and isinstance(reported.get("checksum"), dict):
                rec["checksum"] = reported["checksum"]
            row["runs"].append(rec)

    with open(results_path, "w") as f:
        for row in rows.values():
            for rec in row["runs"]:
                f.write(json.dumps(rec) + "\n")

    def ok_runs(key):
        return [r for r in rows[key]["runs"] if r["rc"] == 0 and "events_per_s" in r]

    def median_of(runs, field):
        values = [r[field] for r in runs if isinstance(r.get(field), (int, float))]
        return statistics.median(values) if values else None

    oracle = None
    if ("python", 1) in rows:
        sums = [r.get("checksum") for r in ok_runs(("python", 1)) if r.get("checksum")]
        oracle = sums[0] if sums else None
    oracle = oracle or KNOWN_CHECKSUMS.get(events)
    limit = median_of(ok_runs(("rust-limit", 1)), "events_per_s") if ("rust-limit", 1) in rows else None

    print("| system | workers | events/s (median) | ratio to rust-limit | max RSS MB (median) | CPU s (median) | runs ok | checksum |")
    print("|---|---|---|---|---|---|---|---|")
    keys = sorted(rows, key=lambda k: (ORDER.index(k[0]) if k[0] in ORDER else len(ORDER), k[0], k[1]))
    wall_marked = False
    for key in keys:
        system, workers = key
        row = rows[key]
        if not row["runs"]:
            print(f"| {system} | {workers} | {row['note'] or 'not run'} | - | - | - | 0/0 | - |")
            continue
        good = ok_runs(key)
        rate = median_of(good, "events_per_s")
        wall = any(r["rate_source"] == "wall" for r in good)
        wall_marked |= wall
        ratio = f"{rate / limit:.2f}x" if rate and limit else "-"
        rss = median_of(good, "max_rss_mb")
        cpu = median_of(good, "cpu_s")
        sums = [r["checksum"] for r in good if "checksum" in r]
        if not sums:
            chk = "-"
        elif oracle is None:
            chk = "no reference"
        else:
            chk = "= oracle" if all(s == oracle for s in sums) else "DIFFERS"
        shown = "failed" if not good else fmt_rate(rate) + ("*" if wall else "")
        print(f"| {system} | {workers} | {shown} | {ratio} | "
              f"{'-' if rss is None else f'{rss:.0f}'} | {'-' if cpu is None else f'{cpu:.1f}'} | "
              f"{len(good)}/{len(row['runs'])} | {chk} |")
    if wall_marked:
        print("\n\\* events / wall-clock seconds of the whole process (start, load, replay, output), "
              "because it printed no JSON `events_per_s`.")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
