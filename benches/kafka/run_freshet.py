#!/usr/bin/env python3
"""Times one `freshet run` from process start until it has read every record of its topic.

usage: run_freshet.py --freshet BIN --port PORT --expect N [--timeout-s S] [--keep-s S] -- RUN_ARGS...

Starts `BIN run RUN_ARGS...` (whose HTTP API must listen on 127.0.0.1:PORT), polls /metrics every
20 ms and stops the clock at the first scrape where freshet_pipeline_events_total + late_total +
rejected_total reaches N (every record read and decoded). It then waits, up to 10 s, for every
freshet_kafka_consumer_lag to read 0 (the lag probe refreshes once a second, and tansu 0.6 leaves
the newest batch out of its high watermarks, so lag 0 alone would not prove that all was read),
stops the service with SIGTERM (it takes a final checkpoint) and waits for its exit.
CPU seconds and peak RSS come from /proc. Prints ONE JSON line:
  {"system":"freshet-run", "events", "seconds", "events_per_s", "lag_zero", "cpu_s", "max_rss_mb", ...}
Every loop is bounded by --timeout-s (default 300). Exit status 1 when N is not reached.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--freshet", required=True)
p.add_argument("--port", type=int, required=True)
p.add_argument("--expect", type=int, required=True)
p.add_argument("--timeout-s", type=float, default=300)
p.add_argument("--log", default=None, help="file for the service's stderr")
p.add_argument("run_args", nargs=argparse.REMAINDER)
a = p.parse_args()
run_args = a.run_args[1:] if a.run_args[:1] == ["--"] else a.run_args

CLK = os.sysconf("SC_CLK_TCK")
METRIC = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def scrape():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{a.port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def proc_usage(pid):
    """(cpu seconds, peak RSS MB) of a live process, or (None, None)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK
        with open(f"/proc/{pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        return cpu, hwm / 1024
    except (OSError, StopIteration, IndexError, ValueError):
        return None, None


def read_total(m):
    return sum(m.get(f"freshet_pipeline_{k}_total", 0.0) for k in ("events", "late", "rejected"))


log = open(a.log, "w") if a.log else subprocess.DEVNULL
t0 = time.perf_counter()
proc = subprocess.Popen([a.freshet, "run", *run_args], stdout=subprocess.DEVNULL, stderr=log,
                        env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn")))
deadline = t0 + a.timeout_s
seconds = None
last = {}
cpu = rss = None
while time.perf_counter() < deadline and proc.poll() is None:
    m = scrape()
    now = time.perf_counter()
    if m is not None:
        last = m
        c, r = proc_usage(proc.pid)
        cpu, rss = (c, r) if c is not None else (cpu, rss)
        if read_total(m) >= a.expect:
            seconds = now - t0
            break
    time.sleep(0.02)

lag_zero = None
if seconds is not None:
    lag_deadline = min(deadline, time.perf_counter() + 10)
    while time.perf_counter() < lag_deadline and proc.poll() is None:
        m = scrape() or {}
        lags = [v for k, v in m.items() if k.startswith("freshet_kafka_consumer_lag{")]
        if lags and all(v == 0 for v in lags):
            lag_zero = True
            last = m
            break
        time.sleep(0.05)
    else:
        lag_zero = False
    c, r = proc_usage(proc.pid)
    cpu, rss = (c, r) if c is not None else (cpu, rss)

exit_code = proc.poll()
stop_s = None
if exit_code is None:
    t_stop = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        exit_code = proc.wait(60)
        stop_s = time.perf_counter() - t_stop
    except subprocess.TimeoutExpired:
        proc.kill()
        exit_code = proc.wait(10)

total = read_total(last)
print(json.dumps({
    "system": "freshet-run", "events": int(total), "expect": a.expect,
    "accepted": int(last.get("freshet_pipeline_events_total", 0)),
    "late": int(last.get("freshet_pipeline_late_total", 0)),
    "rejected": int(last.get("freshet_pipeline_rejected_total", 0)),
    "seconds": round(seconds, 3) if seconds else None,
    "events_per_s": round(a.expect / seconds, 1) if seconds else None,
    "lag_zero": lag_zero, "checkpoints": int(last.get("freshet_checkpoints_total", 0)),
    "store_writes": int(last.get("freshet_store_write_seconds_count", 0)),
    "cpu_s": round(cpu, 2) if cpu is not None else None,
    "max_rss_mb": round(rss, 1) if rss is not None else None,
    "stop_s": round(stop_s, 3) if stop_s is not None else None, "exit_code": exit_code,
}))
sys.exit(0 if seconds is not None and exit_code == 0 else 1)
