#!/usr/bin/env bash
# Sparse shop logs (issue 25): nightrec's nightly job with its defaults
# against the reference SASRec (bench/sasrec_ref.py: full softmax CE at
# every position, no pretraining, Klenitskiy & Vasilev's settings) on the
# same sequences, scored by the same rule (chronological leave-one-out,
# every item ranked, the user's history masked).
#
# Datasets (DATASETS, default all four):
#   sports     Amazon Sports and Outdoors, S3Rec split (../shared/data)
#   toys       Amazon Toys and Games, S3Rec split (../shared/data)
#   sparse     `nightrec gen` in a sparse shape: 30,000 users, 40,000 items
#              (a long-tail catalogue larger than the user count), 240,000
#              events over 30 days
#   ml100k     MovieLens-100k (jobs/ml100k.toml)
# For each dataset and seed of SEEDS (default 42 43 44): the whole job
# (`run --full-retrain`, NIGHTREC_RUN__SEED) under /usr/bin/time, then
# `nightrec eval --cases` for every test case's rank; the reference reads
# nightrec's own sequences (`_work/dt=D/`, after trainset) with the same
# seed. VARIANTS (default "default") adds nightrec configurations:
# NAME:VAR=VALUE,... with NIGHTREC_MODEL__ left off, e.g.
# "nopre:PRETRAIN_EPOCHS=0". Threads: THREADS (default 2) for both.
# REFERENCE=0 reuses the reference runs already under OUT.
# Then bench/sparse_report.py writes the table (RESULTS, default
# bench/results/sparse.md).
# usage: make bench-sparse
#        DATASETS=toys SEEDS=42 bench/sparse.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/variant.sh
PY="$(scripts/setup-python.sh)"
TORCH_PY="$(scripts/setup-torch.sh)"
OUT="${OUT:-bench-out/sparse}"
DATASETS="${DATASETS:-sports toys sparse ml100k}"
SEEDS="${SEEDS:-42 43 44}"
VARIANTS="${VARIANTS:-default}"
THREADS="${THREADS:-2}"
REFERENCE="${REFERENCE:-1}"
DATA="${SPARSE_DATA:-../shared/data}"
BIN=bin/nightrec
TIME=(/usr/bin/time -f '{"wall": %e, "user": %U, "sys": %S, "max_rss_kb": %M}' -o)
mkdir -p "$OUT"

input_of() {  # dataset -> "input config date"
  local ds=$1 dir="$OUT/input-$1"
  case "$ds" in
    sports|toys)
      local file=amazon-sports-and-outdoors.txt.gz
      [ "$ds" = toys ] && file=amazon-toys-and-games.txt.gz
      if [ ! -f "$dir/.complete" ]; then
        rm -rf "$dir" && "$PY" bench/s3rec_to_input.py "$DATA/$file" "$dir" 2026-11-21 >&2 && touch "$dir/.complete"
      fi
      echo "$dir jobs/nightly.toml 2026-11-21" ;;
    sparse)
      if [ ! -f "$dir/.complete" ]; then
        rm -rf "$dir" && $BIN gen --out "$dir" --users 30000 --items 40000 --events 240000 --days 30 --seed 7 \
          --end-date 2026-11-21 >&2 && touch "$dir/.complete"
      fi
      echo "$dir jobs/nightly.toml 2026-11-21" ;;
    ml100k) echo "$(scripts/setup-ml100k.sh) jobs/ml100k.toml 1998-04-22" ;;
    *) echo "unknown dataset $ds" >&2; exit 2 ;;
  esac
}

for ds in $DATASETS; do
  read -r input config date <<< "$(input_of "$ds")"
  mkdir -p "$OUT/$ds"
  for variant in $VARIANTS; do
    variant_env "$variant" || exit 2
    variant="$VARIANT_NAME"; extra=("${VARIANT_ENV[@]}")
    for seed in $SEEDS; do
      name="$variant-seed$seed"
      echo "sparse: $ds $name ..." >&2
      rm -rf "${OUT:?}/$ds/$name"
      env "${extra[@]}" NIGHTREC_RUN__SEED="$seed" NIGHTREC_RUN__THREADS="$THREADS" \
        "${TIME[@]}" "$OUT/$ds/$name.time.json" \
        $BIN --config "$config" --input "$input" --output "$OUT/$ds/$name" --log-format json \
        run --date "$date" --full-retrain > "$OUT/$ds/$name.log" 2>&1
      env "${extra[@]}" NIGHTREC_RUN__SEED="$seed" NIGHTREC_RUN__THREADS="$THREADS" \
        $BIN --config "$config" --input "$input" --output "$OUT/$ds/$name" \
        eval --date "$date" --cases "$OUT/$ds/$name.cases.parquet" > /dev/null
    done
  done
  # The reference on nightrec's sequences of the date (the same for every
  # seed and variant: cleaning and the split do not depend on them).
  first="$(echo "$VARIANTS" | awk '{print $1}')"; first="${first%%:*}-seed$(echo "$SEEDS" | awk '{print $1}')"
  for seed in $SEEDS; do
    [ "$REFERENCE" = 1 ] || continue
    echo "sparse: $ds reference seed $seed ..." >&2
    "${TIME[@]}" "$OUT/$ds/reference-seed$seed.time.json" \
      "$TORCH_PY" bench/sasrec_ref.py "$OUT/$ds/$first/_work/dt=$date" --seed "$seed" --threads "$THREADS" \
      --per-user "$OUT/$ds/reference-seed$seed.cases.parquet" > "$OUT/$ds/reference-seed$seed.json" \
      2> "$OUT/$ds/reference-seed$seed.log"
  done
done
"$PY" bench/sparse_report.py "$OUT" "$DATASETS" "$VARIANTS" "$SEEDS" > "${RESULTS:-bench/results/sparse.md}"
cat "${RESULTS:-bench/results/sparse.md}"
