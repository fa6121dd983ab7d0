"""One measurement point of benches/gateway/run.sh: runs `oha` against a target and reads the
CPU time the target's processes used meanwhile, from /proc/PID/stat (utime + stime, fields 14
and 15, summed over the process and its descendants).

Appends one JSON object per point to --out:
  {target, protocol, mode, rate, seconds, requests, ok, non_2xx, errors, achieved_rps,
   p50_ms, p99_ms, cpu_s, cpu_us_per_req, backend_cpu_us_per_req, loadgen_cpu_us_per_req}

usage: measure.py --out FILE --target NAME --protocol P --url URL --body-file F
                  [--header 'K: V']... --pid PID [--backend-pid PID]
                  (--rate R | --max) --seconds S --connections C [--warmup]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def children_map():
    """ppid -> [pid] for every process."""
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces: fields after it follow the last ')'.
        rest = stat[stat.rfind(")") + 2 :].split()
        kids.setdefault(int(rest[1]), []).append(int(entry))
    return kids


def tree(pid):
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def ticks(pid):
    """utime + stime (fields 14 and 15 of /proc/PID/stat), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    rest = stat[stat.rfind(")") + 2 :].split()
    # rest[0] is field 3 (state): field N is rest[N - 3].
    return int(rest[14 - 3]) + int(rest[15 - 3])


def tree_ticks(pid):
    return {p: ticks(p) for p in tree(pid)}


def used_seconds(before, after):
    # Processes that appear during the run count from zero; ones that vanish are lost (none
    # should: the servers keep their workers).
    return sum(t - before.get(p, 0) for p, t in after.items()) / CLK_TCK


def oha_json_flag():
    help_text = subprocess.run(["oha", "--help"], capture_output=True, text=True).stdout
    return ["--output-format", "json"] if "--output-format" in help_text else ["--json"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--body-file", required=True)
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--backend-pid", type=int)
    ap.add_argument("--rate", type=float)
    ap.add_argument("--max", action="store_true")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--warmup", action="store_true", help="run, check, record nothing")
    a = ap.parse_args()

    cmd = ["oha", "--no-tui", *oha_json_flag(), "-z", f"{a.seconds}s", "-c", str(a.connections),
           "-m", "POST", "-T", "application/json", "-D", a.body_file]
    for h in a.header:
        cmd += ["-H", h]
    if a.rate:
        cmd += ["-q", str(a.rate)]
    cmd.append(a.url)

    before = tree_ticks(a.pid)
    backend_before = tree_ticks(a.backend_pid) if a.backend_pid else {}
    self_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        err.seek(0)
        stderr = err.read()
    wall = time.monotonic() - started
    after = tree_ticks(a.pid)
    backend_after = tree_ticks(a.backend_pid) if a.backend_pid else {}
    self_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"oha failed ({proc.returncode}): {stderr}\n{' '.join(cmd)}")
    report = json.loads(proc.stdout)

    codes = {int(k): v for k, v in report.get("statusCodeDistribution", {}).items()}
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    non_2xx = sum(v for k, v in codes.items() if not 200 <= k < 300)
    errors = sum(report.get("errorDistribution", {}).values())
    # Requests still in flight when oha's time is up are reported as "aborted due to deadline"
    # (at most one per connection): not failures of the target.
    aborted = report.get("errorDistribution", {}).get("aborted due to deadline", 0)
    pct = report["latencyPercentiles"]
    summary = report["summary"]
    cpu = used_seconds(before, after)
    backend_cpu = used_seconds(backend_before, backend_after) if a.backend_pid else None
    loadgen_cpu = (self_after.ru_utime + self_after.ru_stime) - (self_before.ru_utime + self_before.ru_stime)
    point = {
        "target": a.target,
        "protocol": a.protocol,
        "mode": "max" if a.max else f"rate {a.rate:g}",
        "rate": a.rate,
        "seconds": wall,
        "connections": a.connections,
        "requests": ok + non_2xx,
        "ok": ok,
        "non_2xx": non_2xx,
        "status_codes": codes,
        "errors": errors,
        "aborted_at_end": aborted,
        "achieved_rps": ok / summary["total"] if summary.get("total") else 0.0,
        "p50_ms": (pct.get("p50") or 0) * 1000,
        "p99_ms": (pct.get("p99") or 0) * 1000,
        "cpu_s": cpu,
        "cpu_us_per_req": cpu / ok * 1e6 if ok else None,
        "backend_cpu_us_per_req": backend_cpu / ok * 1e6 if ok and backend_cpu is not None else None,
        "loadgen_cpu_us_per_req": loadgen_cpu / ok * 1e6 if ok else None,
    }
    if ok == 0 or non_2xx + errors - min(aborted, a.connections) > 0.01 * max(ok, 1):
        print(f"  WARNING {a.target}/{a.protocol} {point['mode']}: ok={ok} status codes={codes} "
              f"errors={report.get('errorDistribution')}", file=sys.stderr)
    print(f"  {a.target:<11} {a.protocol:<5} {point['mode']:<10} {point['achieved_rps']:8.0f} req/s  "
          f"p50 {point['p50_ms']:7.3f} ms  p99 {point['p99_ms']:7.3f} ms  "
          f"cpu {point['cpu_us_per_req'] or 0:7.1f} us/req  ok={ok} bad={non_2xx + errors}",
          file=sys.stderr)
    if a.warmup:
        return
    with open(a.out, "a") as f:
        f.write(json.dumps(point) + "\n")


if __name__ == "__main__":
    main()
