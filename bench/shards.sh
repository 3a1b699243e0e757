#!/usr/bin/env bash
# The Airflow DAG's tasks at a shop's scale, as separate processes one after
# another: `prepare` (clean ... embed), N candidate shards, then the
# `publish` task that assembles the shards, evaluates and publishes; against
# the same date run unsharded (one process after `prepare`). Records each
# task's wall time, CPU time and peak RSS (/usr/bin/time) and each stage's
# (the run summary), and checks that both ways publish the same candidate
# lists. Writes bench/results/shards.md.
#   SIZE: S (1M events, 100k users, 10k items), M (3M, 300k, 30k) or
#         L (10M, 1M, 100k; default)
#   EPOCHS: most pretraining and fine-tuning epochs (default: the config's)
# usage: bench/shards.sh              (make bench-shards builds first)
#        SIZE=S SHARDS=4 bench/shards.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${SIZE:-L}"
SHARDS="${SHARDS:-4}"
THREADS="${THREADS:-2}"
OUT="${OUT:-bench-out/shards}"
DATE="${DATE:-2026-11-21}"
# EPOCHS caps pretraining and fine-tuning epochs in every task (a memory
# measurement: what candidates and publish hold does not depend on how long
# train ran); empty = the config's.
EPOCHS="${EPOCHS:-}"
if [[ -n "$EPOCHS" ]]; then
  export NIGHTREC_MODEL__PRETRAIN_EPOCHS="$EPOCHS" NIGHTREC_MODEL__EPOCHS="$EPOCHS"
fi
PY="$(scripts/setup-python.sh)"
scripts/setup-models.sh >/dev/null
case "$SIZE" in
  S) events=1000000 users=100000 items=10000 ;;
  M) events=3000000 users=300000 items=30000 ;;
  L) events=10000000 users=1000000 items=100000 ;;
  *) echo "unknown size $SIZE (S, M or L)" >&2; exit 2 ;;
esac
in="$OUT/$SIZE/in"
# The same data as bench-scale's (30 days ending DATE).
if [[ ! -f "$in/.complete" ]]; then
  rm -rf "$in"
  echo "bench-shards: generating $SIZE ..." >&2
  bin/nightrec gen --out "$in" --users "$users" --items "$items" --events "$events" --days 30 --seed 1 \
    --end-date "$DATE" >&2
  touch "$in/.complete"
fi
sharded="$OUT/$SIZE/sharded" whole="$OUT/$SIZE/unsharded" logs="$OUT/$SIZE/logs"
rm -rf "$sharded" "$whole" "$logs"
mkdir -p "$logs"
task() { # name, output, nightrec run args...
  local name=$1 out=$2
  shift 2
  echo "bench-shards: $SIZE $name ..." >&2
  NIGHTREC_RUN__THREADS="$THREADS" NIGHTREC_LOG=info \
    /usr/bin/time -f '{"wall": %e, "user": %U, "sys": %S, "max_rss_kb": %M}' -o "$logs/$name.time.json" \
    bin/nightrec --config jobs/nightly.toml --input "$in" --output "$out" run --date "$DATE" "$@" \
    > "$logs/$name.summary" 2> "$logs/$name.log"
}
task prepare "$sharded" --stage clean --stage trainset --stage text --stage train --stage embed
# The unsharded run starts from a copy of the same prepared work.
cp -r "$sharded" "$whole"
for ((i = 0; i < SHARDS; i++)); do
  task "shard-$i" "$sharded" --shard "$i/$SHARDS"
done
task publish "$sharded"
task unsharded "$whole"
rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src sql jobs Cargo.toml || echo +changes)"
"$PY" bench/shards_report.py "$OUT/$SIZE" "$SIZE" "$SHARDS" "$THREADS" "$rev" \
  "SIZE=$SIZE SHARDS=$SHARDS THREADS=$THREADS${EPOCHS:+ EPOCHS=$EPOCHS} make bench-shards" "$EPOCHS" > bench/results/shards.md
cat bench/results/shards.md
