#!/usr/bin/env python3
"""Turns the records of scripts/bench-kafka.sh into markdown tables of medians, ratios and target
verdicts.

usage: report.py RESULTS.jsonl EVENTS

Each record is {"part", "case", "workers", "run", "rc", "result"} (result: the JSON line the case
printed, or null) or {"part", "case", "note"}. A figure is the median over the runs that succeeded;
a case without one reads "not measured".
"""
import json
import statistics
import sys

TARGETS = {"raw_ratio": 0.70, "quix_ratio": 20.0, "fresh_p99_ms": 50.0, "lookup1_p99_ms": 0.5,
           "lookup100_p99_ms": 5.0, "feast_ratio": 10.0}


def load(path):
    runs, notes = {}, []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if "note" in r:
                notes.append(r)
                continue
            runs.setdefault((r["case"], r["workers"]), []).append(r)
    return runs, notes


def ok_results(runs, case, workers):
    return [r["result"] for r in runs.get((case, workers), []) if r["rc"] == 0 and r["result"]]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rate(v):
    if v is None:
        return "not measured"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def num(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def rx(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}x"


def ratio(a, b):
    return None if a is None or not b else a / b


def verdict(value, target, higher_is_better=True):
    if value is None:
        return "not measured"
    met = value >= target if higher_is_better else value < target
    return "**met**" if met else "**not met**"


def runs_label(runs, case, workers):
    all_runs = runs.get((case, workers), [])
    return f"{len(ok_results(runs, case, workers))}/{len(all_runs)}"


def main(path, events):
    runs, notes = load(path)
    workers = sorted({w for (c, w) in runs if c in ("freshet-run", "rdkafka-count")})
    lines = []
    out = lines.append
    loads = {}
    for rs in runs.values():
        for r in rs:
            if r.get("load1") is not None:
                loads.setdefault(r["part"], []).append(r["load1"])
    if loads:
        out("Load average (1 min) when each record was taken: "
            + "; ".join(f"{part} {min(v):.1f}-{max(v):.1f}" for part, v in loads.items()) + ".")
        out("")

    # --- 1. throughput
    out(f"## 1. Throughput, Kafka -> Redis ({events:,} events, 4 partitions)")
    out("")
    out("`freshet run` rows: process start until events + late + rejected = N (then lag 0 checked). "
        "Count rows: an rdkafka consumer per partition that only counts, freshet's client settings.")
    out("")
    out("| system | workers / threads | events/s (median) | runs ok | ratio to raw (same threads) "
        "| ratio to Quix | CPU s | peak RSS MB | lag 0 after |")
    out("|---|---|---|---|---|---|---|---|---|")
    raw = {w: med([r["msgs_per_s"] for r in ok_results(runs, "rdkafka-count", w)]) for w in workers}
    fr = {w: med([r["events_per_s"] for r in ok_results(runs, "freshet-run", w)]) for w in workers}
    quix = med([r.get("events_per_s") for r in ok_results(runs, "quixstreams", 1)])
    for w in workers:
        if ("rdkafka-count", w) in runs:
            out(f"| rdkafka count consumer (raw) | {w} | {rate(raw[w])} | {runs_label(runs, 'rdkafka-count', w)} "
                f"| 1.00x | {rx(ratio(raw[w], quix), 1)} | - | - | - |")
    for w in workers:
        if ("freshet-run", w) in runs:
            res = ok_results(runs, "freshet-run", w)
            lag = [r.get("lag_zero") for r in res]
            out(f"| freshet run, foundation pipeline, Redis | {w} | {rate(fr[w])} "
                f"| {runs_label(runs, 'freshet-run', w)} | {rx(ratio(fr[w], raw.get(w)))} "
                f"| {rx(ratio(fr[w], quix), 1)} | {num(med([r.get('cpu_s') for r in res]), 1)} "
                f"| {num(med([r.get('max_rss_mb') for r in res]), 0)} "
                f"| {sum(1 for x in lag if x)}/{len(lag)} runs |")
    for case, label in (("freshet-run-memory-store", "breakdown: freshet run, memory store (no Redis)"),
                        ("freshet-run-no-checkpoints", "breakdown: freshet run, Redis, no checkpoints"),
                        ("freshet-replay", "breakdown: freshet replay of the file (no Kafka, memory store)"),
                        ("freshet-run-w1w2", "freshet run, W1+W2 pipeline (Quix's workload), Redis")):
        for w in sorted({w for (c, w) in runs if c == case}):
            res = ok_results(runs, case, w)
            v = med([r.get("events_per_s") for r in res])
            out(f"| {label} | {w} | {rate(v)} | {runs_label(runs, case, w)} | {rx(ratio(v, raw.get(w)))} "
                f"| {rx(ratio(v, quix), 1)} | {num(med([r.get('cpu_s') for r in res]), 1)} "
                f"| {num(med([r.get('max_rss_mb', r.get('peak_rss_mb')) for r in res]), 0)} | - |")
    if ("quixstreams", 1) in runs:
        res = ok_results(runs, "quixstreams", 1)
        out(f"| Quix Streams {res[0].get('version', '') if res else ''} (W1+W2 windows, 1 partition) | 1 "
            f"| {rate(quix)} | {runs_label(runs, 'quixstreams', 1)} | - | 1.00x "
            f"| - | {num(med([r.get('max_rss_mb') for r in res]), 0)} | - |")
    prod = ok_results(runs, "freshet-produce", 1)
    if prod:
        out(f"| (freshet produce, loading the topic) | 1 | {rate(prod[0]['events_per_s'])} | 1/1 | - | - | - | - | - |")
    out("")
    best_fr = max((v for v in fr.values() if v), default=None)
    best_raw = max((v for v in raw.values() if v), default=None)
    same = [ratio(fr[w], raw.get(w)) for w in workers if fr.get(w) and raw.get(w)]
    out(f"- freshet >= 70 % of raw: best freshet / best raw = {num(ratio(best_fr, best_raw))} "
        f"({verdict(ratio(best_fr, best_raw), TARGETS['raw_ratio'])}); same thread count: "
        + (", ".join(f"{w}: {num(ratio(fr[w], raw[w]))}" for w in workers if fr.get(w) and raw.get(w)) or "-")
        + (f" ({verdict(min(same), TARGETS['raw_ratio'])} for all)" if same else ""))
    out(f"- freshet >= 20x Quix: best freshet (foundation) / Quix = {rx(ratio(best_fr, quix), 1)} "
        f"({verdict(ratio(best_fr, quix), TARGETS['quix_ratio'])})")
    w1w2 = max((med([r["events_per_s"] for r in ok_results(runs, "freshet-run-w1w2", w)])
                for w in workers if ("freshet-run-w1w2", w) in runs), default=None)
    if w1w2:
        out(f"- like for like (both W1+W2): freshet run W1+W2 / Quix = {rx(ratio(w1w2, quix), 1)} "
            f"({verdict(ratio(w1w2, quix), TARGETS['quix_ratio'])})")
    out("")

    # --- 2. freshness
    out("## 2. Freshness: produce-ack -> visible over HTTP")
    out("")
    res = [r for (c, w), rs in runs.items() if c == "freshet-freshness" for r in rs]
    good = [r["result"] for r in res if r["rc"] == 0 and r["result"]]
    if good:
        fw = next(w for (c, w) in runs if c == "freshet-freshness")
        a = lambda k: med([g["ack_to_visible"][k] for g in good])  # noqa: E731
        s = lambda k: med([g["send_to_visible"][k] for g in good])  # noqa: E731
        out("| workers | runs ok | probes visible / sent | ack->visible p50 | p90 | p99 | p99.9 | max "
            "| send->visible p50 | p99 | background events/s (target) |")
        out("|---|---|---|---|---|---|---|---|---|---|---|")
        out(f"| {fw} | {len(good)}/{len(res)} | {sum(g['probes_visible'] for g in good)} / "
            f"{sum(g['probes_sent'] for g in good)} | {num(a('p50_ms'))} ms | {num(a('p90_ms'))} ms "
            f"| {num(a('p99_ms'))} ms | {num(a('p999_ms'))} ms | {num(max(g['ack_to_visible']['max_ms'] for g in good))} ms "
            f"| {num(s('p50_ms'))} ms | {num(s('p99_ms'))} ms "
            f"| {rate(med([g['background_rate'] for g in good]))} ({rate(good[0]['background_rate_target'])}) |")
        seen = [g for g in good if g.get("ack_to_consumed", {}).get("n")]
        if seen:
            c = lambda k: med([g["ack_to_consumed"][k] for g in seen])  # noqa: E731
            out(f"| broker alone: a plain consumer, fetch wait {seen[0]['observer_fetch_wait_ms']} ms "
                f"(ack->consumed) | {len(seen)} runs | {sum(g['ack_to_consumed']['n'] for g in seen)} "
                f"| {num(c('p50_ms'))} ms | {num(c('p90_ms'))} ms | {num(c('p99_ms'))} ms "
                f"| {num(c('p999_ms'))} ms | {num(max(g['ack_to_consumed']['max_ms'] for g in seen))} ms | - | - | - |")
        out("")
        worst = max(g["ack_to_visible"]["p99_ms"] for g in good)
        out(f"- p99 < 50 ms: median p99 {num(a('p99_ms'))} ms ({verdict(a('p99_ms'), TARGETS['fresh_p99_ms'], False)}), "
            f"worst run p99 {num(worst)} ms; per run p50/p99: "
            + ", ".join(f"{num(g['ack_to_visible']['p50_ms'], 1)}/{num(g['ack_to_visible']['p99_ms'], 1)}" for g in good)
            + f" ms; a batch lookup of the probes in flight every {good[0]['poll_interval_us']} us")
        drains = [r["result"] for rs in (v for (c, _), v in runs.items() if c == "freshet-freshness-drain")
                  for r in rs if r["result"]]
        if drains:
            out("- kept up with the background rate: records still unread when the probes ended, per run: "
                + ", ".join(f"{d['behind_at_end']:,} (read {d['drain_s']} s later)" if d["drained"]
                            else f"{d['behind_at_end']:,} (not read within {d['drain_s']} s)" for d in drains))
            if all("late" in d for d in drains):
                out("- late events (dead-lettered) during the probes, per run: "
                    + ", ".join(f"{d['late']:,}" for d in drains))
    else:
        out("not measured" + (f" (runs failed: {len(res)})" if res else ""))
    out("")

    # --- 3. lookups
    out("## 3. Lookups")
    out("")
    out("| system | request | concurrency | req/s (median) | p50 ms | p99 ms | p99.9 ms | runs ok | errors |")
    out("|---|---|---|---|---|---|---|---|---|")
    fl = {}
    for c in (1, 32):
        for n, label in (("get", "GET /v1/features/card/{id}"), ("1", "POST /v1/features, 1 entity"),
                         ("100", "POST /v1/features, 100 entities")):
            case = f"freshet-{n}-c{c}"
            if (case, c) not in runs:
                continue
            rs = ok_results(runs, case, c)
            row = {"rps": med([r["rps"] for r in rs]), "p50": med([r["p50_us"] / 1e3 for r in rs]),
                   "p99": med([r["p99_us"] / 1e3 for r in rs]), "p999": med([r["p999_us"] / 1e3 for r in rs])}
            fl[(n, c)] = row
            errs = sum(r["non2xx"] + r["sock_errors"] for r in rs)
            out(f"| freshet (wrk -t1) | {label} | {c} | {rate(row['rps'])} | {num(row['p50'], 3)} "
                f"| {num(row['p99'], 3)} | {num(row['p999'], 3)} | {runs_label(runs, case, c)} | {errs} |")
    redis_cases = [("redis-get-c1", 1, "GET (value of a vector's size)"),
                   ("redis-vec-c1", 1, "GET of one freshet vector"),
                   ("redis-mget100-c1", 1, "MGET of 100 freshet vectors"),
                   ("redis-get-c32", 32, "GET"), ("redis-mget10-c50", 50, "MGET of 10 keys")]
    for case, c, label in redis_cases:
        if (case, c) not in runs:
            continue
        rs = ok_results(runs, case, c)
        pl = rs[0]["pipeline"] if rs else 1
        rps = med([r["rps"] / pl for r in rs])
        lat = "per command" if pl > 1 else ""
        out(f"| redis-benchmark | {label} | {c} | {rate(rps)} | {num(med([r['p50_ms'] for r in rs]), 3)}{' ' + lat if lat else ''} "
            f"| {num(med([r['p99_ms'] for r in rs]), 3)} | - | {runs_label(runs, case, c)} | - |")
    feast = ok_results(runs, "feast", 1)
    fh = {}
    if feast:
        f = feast[0]
        for key, (n, c) in (("n1_c1", ("1", 1)), ("n100_c1", ("100", 1)), ("n1_c32", ("1", 32)),
                            ("n100_c32", ("100", 32))):
            h = f.get("http", {}).get(key)
            if not h:
                continue
            fh[(n, c)] = h
            out(f"| Feast {f.get('version')} feature server (wrk -t1) | get-online-features, {n} "
                f"{'entity' if n == '1' else 'entities'} | {c} | {rate(h['rps'])} | {num(h['p50_ms'], 3)} "
                f"| {num(h['p99_ms'], 3)} | {num(h['p999_ms'], 3)} | {len(h.get('rps_runs', [1]))} runs | {h.get('errors', 0)} |")
        for key, n in (("n1", "1 entity"), ("n100", "100 entities")):
            sdk = f.get("sdk", {}).get(key)
            if sdk:
                out(f"| Feast SDK in process | get_online_features, {n} | 1 | {rate(sdk['calls_per_s'])} "
                    f"| {num(sdk['p50_ms'], 3)} | {num(sdk['p99_ms'], 3)} | {num(sdk['p999_ms'], 3)} | - | - |")
    out("")
    p1, p100 = fl.get(("1", 1), {}).get("p99"), fl.get(("100", 1), {}).get("p99")
    out(f"- p99 < 0.5 ms for 1 entity at concurrency 1: {num(p1, 3)} ms ({verdict(p1, TARGETS['lookup1_p99_ms'], False)})")
    out(f"- p99 < 5 ms for 100 entities at concurrency 1: {num(p100, 3)} ms ({verdict(p100, TARGETS['lookup100_p99_ms'], False)})")
    for n in ("1", "100"):
        r = ratio(fl.get((n, 32), {}).get("rps"), fh.get((n, 32), {}).get("rps"))
        out(f"- >= 10x Feast req/s at concurrency 32, {n} {'entity' if n == '1' else 'entities'}: "
            f"{rx(r, 1)} ({verdict(r, TARGETS['feast_ratio'])})")
    if notes:
        out("")
        out("Notes:")
        for n in notes:
            out(f"- {n['part']}/{n['case']}: {n['note']}")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
