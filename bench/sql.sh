#!/usr/bin/env bash
# The clean and trainset stages on a generated log of EVENTS (default 10M)
# events, with nightrec and with nightrec's own SQL files run by DuckDB
# (bench/duckdb_clean_trainset.py) on the same files, in the same run, with
# the same threads and memory limit (where DuckDB runs out of memory, its
# limit is doubled until it finishes, and that is reported). Prints wall
# time, peak memory (max RSS), the ratios, and each engine's row counts
# (which must agree).
# usage: bench/sql.sh   (make bench-sql builds first)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-10000000}"
USERS="${USERS:-200000}"
ITEMS="${ITEMS:-50000}"
THREADS="${THREADS:-2}"
MEM_MB="${MEM_MB:-2048}"
DATE=2026-11-21
JOB=jobs/nightly.toml
OUT="${OUT:-bench-out/sql}"
PY="$(scripts/setup-python.sh)"
IN="$OUT/in-$EVENTS"
if [[ ! -f "$IN/.complete" ]]; then
  rm -rf "$IN"
  echo "bench-sql: generating $EVENTS events ..." >&2
  bin/nightrec gen --out "$IN" --users "$USERS" --items "$ITEMS" --events "$EVENTS" --days 30 --seed 1 --end-date "$DATE" >&2
  touch "$IN/.complete"
fi
rm -rf "$OUT/nightrec" "$OUT/duckdb"
echo "bench-sql: nightrec ..." >&2
# Info-level JSON logs: one "wrote work table" line per table gives the
# per-table times (a few lines per table; no measurable cost).
NIGHTREC_RUN__THREADS="$THREADS" NIGHTREC_RUNTIME__SQL_MEMORY_MB="$MEM_MB" NIGHTREC_LOG=info \
  /usr/bin/time -f '{"wall": %e, "user": %U, "sys": %S, "max_rss_kb": %M}' -o "$OUT/nightrec.time.json" \
  bin/nightrec --config "$JOB" --input "$IN" --output "$OUT/nightrec" --log-format json \
  run --date "$DATE" --stage clean --stage trainset --force > "$OUT/nightrec.summary" 2> "$OUT/nightrec.log"
# DuckDB gets the same memory limit; where it runs out of memory there, the
# limit is doubled (up to 32 GiB) and the limits it failed at are reported.
DUCK_MB="$MEM_MB"
: > "$OUT/duckdb.failed"
while true; do
  echo "bench-sql: duckdb with memory_limit ${DUCK_MB} MB ..." >&2
  if /usr/bin/time -f '{"wall": %e, "user": %U, "sys": %S, "max_rss_kb": %M}' -o "$OUT/duckdb.time.json" \
    "$PY" bench/duckdb_clean_trainset.py "$JOB" "$IN" "$OUT/duckdb" "$DATE" "$THREADS" "${DUCK_MB}MB" > "$OUT/duckdb.log" 2>&1; then
    break
  fi
  if ! grep -q "OutOfMemoryException" "$OUT/duckdb.log" || (( DUCK_MB >= 32768 )); then
    cat "$OUT/duckdb.log" >&2
    exit 1
  fi
  step=$(grep -o 'run("[a-z_]*"' "$OUT/duckdb.log" | tail -1 | cut -d'"' -f2)
  echo "$DUCK_MB $step" >> "$OUT/duckdb.failed"
  DUCK_MB=$(( DUCK_MB * 2 ))
done
mkdir -p bench/results
"$PY" - "$OUT" "$DATE" "$EVENTS" "$MEM_MB" "$DUCK_MB" "$THREADS" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" <<'PYEOF' | tee bench/results/sql.md
import ast, datetime, glob, json, os, sys
import duckdb
import pyarrow.parquet as pq
out, date, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
mem_mb, duck_mb, threads, commit = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
n = json.load(open(f"{out}/nightrec.time.json"))
d = json.load(open(f"{out}/duckdb.time.json"))
duck_rows = ast.literal_eval(open(f"{out}/duckdb.log").read().strip().splitlines()[-1])["rows"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print("# bench-sql: clean + trainset, nightrec against DuckDB running the same SQL files\n")
print(f"- date: {datetime.date.today()}, commit {commit}; command: `make bench-sql` (bench/sql.sh)")
print(f"- machine: {os.cpu_count()} cores ({cpu}); {threads} threads for each engine; DuckDB {duckdb.__version__}\n")
print(f"clean + trainset on {events:,} generated events (30 daily files: Parquet, NDJSON, CSV)\n")
for line in open(f"{out}/duckdb.failed").read().splitlines():
    limit, step = line.split()
    print(f"DuckDB ran out of memory with memory_limit {limit} MB (in {step}); retried with twice the limit")
print("| engine | memory limit MiB | wall s | CPU s | peak RSS MiB |")
print("|---|---|---|---|---|")
for name, t, limit in (("nightrec (DataFusion)", n, mem_mb), ("DuckDB", d, duck_mb)):
    print(f"| {name} | {limit} | {t['wall']:.1f} | {t['user'] + t['sys']:.1f} | {t['max_rss_kb'] / 1024:.0f} |")
print(f"nightrec / DuckDB: wall {n['wall'] / d['wall']:.2f}x, peak memory {n['max_rss_kb'] / d['max_rss_kb']:.2f}x")
agree = True
for t, want in duck_rows.items():
    got = sum(pq.read_metadata(f).num_rows for f in glob.glob(f"{out}/nightrec/_work/dt={date}/{t}/*.parquet"))
    flag = "" if got == want else "  <-- differs"
    agree &= got == want
    print(f"rows {t}: nightrec {got:,} duckdb {want:,}{flag}")
# Per table: nightrec from its log (time since the previous table or the
# stage's start), DuckDB from its own timings.
duck_t = ast.literal_eval(open(f"{out}/duckdb.log").read().strip().splitlines()[-1])["timings"]
ours, last = {}, None
for line in open(f"{out}/nightrec.log"):
    try:
        rec = json.loads(line)
    except ValueError:
        continue
    f = rec.get("fields", {})
    at = datetime.datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
    if f.get("message") == "stage starts":
        last = at
    elif f.get("message") == "wrote work table" and last is not None:
        ours[f.get("table")] = at - last
        last = at
print("\nPer table, seconds (nightrec: from its log, since the previous table; DuckDB: its own timings):\n")
print("| table | nightrec | DuckDB | ratio |")
print("|---|---|---|---|")
for t, dt in duck_t.items():
    if t in ours:
        print(f"| {t} | {ours[t]:.1f} | {dt:.1f} | {ours[t] / max(dt, 0.01):.2f}x |")
sys.exit(0 if agree else 1)
PYEOF
