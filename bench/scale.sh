#!/usr/bin/env bash
# A whole nightly job at a shop's scale, two nights per size, with the
# default jobs/nightly.toml: night 1 (`run --date D`, from scratch) and
# night 2 (`run --date D+1`, one more day of data, warm-started: the steady
# state). Data from `nightrec gen` over 30 days (+1 for night 2):
#   S: 1M events, 100k users, 10k items
#   M: 3M events, 300k users, 30k items
#   L: 10M events, 1M users, 100k items
# Records per stage: wall time, CPU time, peak RSS, rows (from the run
# summary); per night: wall, CPU and peak RSS of the whole process
# (/usr/bin/time). Writes bench/results/scale.md with the growth exponent
# of each stage from the smallest to the largest size run.
# NIGHTS (default "1 2") runs only some nights; RESULTS (default
# bench/results/scale.md) is the report's file.
# usage: bench/scale.sh            (make bench-scale builds first)
#        SIZES="S M" bench/scale.sh
#        SIZES="M L" NIGHTS=1 RESULTS=bench/results/other.md bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES="${SIZES:-S M L}"
THREADS="${THREADS:-2}"
OUT="${OUT:-bench-out/scale}"
DATE="${DATE:-2026-11-21}"
NEXT=$(date -u -d "$DATE + 1 day" +%F)
NIGHTS="${NIGHTS:-1 2}"
RESULTS="${RESULTS:-bench/results/scale.md}"
PY="$(scripts/setup-python.sh)"
scripts/setup-models.sh >/dev/null
mkdir -p "$OUT" bench/results
for size in $SIZES; do
  case "$size" in
    S) events=1000000 users=100000 items=10000 ;;
    M) events=3000000 users=300000 items=30000 ;;
    L) events=10000000 users=1000000 items=100000 ;;
    *) echo "unknown size $size (S, M or L)" >&2; exit 2 ;;
  esac
  in="$OUT/$size/in"
  if [[ ! -f "$in/.complete" ]]; then
    rm -rf "$in"
    echo "bench-scale: generating $size ($events events over 31 days) ..." >&2
    # 31 days ending D+1: night 1 reads 30 of them, night 2 the last 30.
    bin/nightrec gen --out "$in" --users "$users" --items "$items" --events $(( events * 31 / 30 )) --days 31 \
      --seed 1 --end-date "$NEXT" >&2
    touch "$in/.complete"
  fi
  rm -rf "$OUT/$size/out"
  for night in $NIGHTS; do
    date=$DATE; [[ $night == 2 ]] && date=$NEXT
    echo "bench-scale: $size night $night ($date) ..." >&2
    NIGHTREC_RUN__THREADS="$THREADS" NIGHTREC_LOG=info \
      /usr/bin/time -f '{"wall": %e, "user": %U, "sys": %S, "max_rss_kb": %M}' -o "$OUT/$size/night$night.time.json" \
      bin/nightrec --config jobs/nightly.toml --input "$in" --output "$OUT/$size/out" run --date "$date" \
      > "$OUT/$size/night$night.summary" 2> "$OUT/$size/night$night.log"
  done
  rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src sql jobs Cargo.toml || echo +changes)"
  printf '{"size": "%s", "events": %d, "users": %d, "items": %d, "threads": %d, "commit": "%s"}\n' \
    "$size" "$events" "$users" "$items" "$THREADS" "$rev" > "$OUT/$size/size.json"
done
command="make bench-scale SIZES=\"$SIZES\" THREADS=$THREADS"
[[ "$NIGHTS" == "1 2" ]] || command="SIZES=\"$SIZES\" THREADS=$THREADS NIGHTS=\"$NIGHTS\" bench/scale.sh"
"$PY" bench/scale_report.py "$OUT" "$SIZES" "$command" > "$RESULTS"
cat "$RESULTS"
