#!/usr/bin/env bash
# Training: nightrec's train stage against the same model in PyTorch eager
# mode (bench/torch_twin.py), on the same work tables (nightrec's own
# sequences and item text embeddings), with the same windows, batch size,
# dimensions, loss (uniform negatives: the twin draws no others), epochs
# and thread count, one after the other on an
# otherwise idle machine. nightrec runs twice: as configured (bf16 products
# on a CPU with AVX512-BF16) and in fp32, the twin's arithmetic. Both get the same allocator thresholds (nightrec
# sets them with mallopt; the twin through glibc's MALLOC_*_ environment).
# Sizes: ml100k (MovieLens-100k, full softmax) and M (3M generated events,
# 300k users, 30k items: sampled softmax). Fixed epochs, no early stop.
# Writes bench/results/train.md.
# usage: bench/train.sh   (make bench-train builds first)
#        SIZES="ml100k" PRETRAIN=2 EPOCHS=3 THREADS=2 bench/train.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES="${SIZES:-ml100k M}"
PRETRAIN="${PRETRAIN:-2}"
EPOCHS="${EPOCHS:-3}"
THREADS="${THREADS:-2}"
OUT="${OUT:-bench-out/train}"
TORCH_PY="$(scripts/setup-torch.sh)"
scripts/setup-models.sh >/dev/null
mkdir -p "$OUT" bench/results
for size in $SIZES; do
  case "$size" in
    ml100k) input="$(scripts/setup-ml100k.sh)" config=jobs/ml100k.toml date=1998-04-22 ;;
    M)
      input="$OUT/M/in" config=jobs/nightly.toml date=2026-11-21
      if [[ ! -f "$input/.complete" ]]; then
        rm -rf "$input"
        bin/nightrec gen --out "$input" --users 300000 --items 30000 --events 3000000 --days 30 --seed 1 \
          --end-date "$date" >&2
        touch "$input/.complete"
      fi
      ;;
    *) echo "unknown size $size (ml100k or M)" >&2; exit 2 ;;
  esac
  out="$OUT/$size/out"
  if [[ ! -f "$OUT/$size/.prepared" ]]; then
    echo "bench-train: $size: clean, trainset, text ..." >&2
    rm -rf "$out"
    NIGHTREC_RUN__THREADS="$THREADS" bin/nightrec --config "$config" --input "$input" --output "$out" \
      run --date "$date" --stage clean --stage trainset --stage text > "$OUT/$size/prepare.summary" 2> "$OUT/$size/prepare.log"
    touch "$OUT/$size/.prepared"
  fi
  echo "bench-train: $size: nightrec ..." >&2
  NIGHTREC_RUN__THREADS="$THREADS" NIGHTREC_MODEL__PRETRAIN_EPOCHS="$PRETRAIN" NIGHTREC_MODEL__EPOCHS="$EPOCHS" \
    NIGHTREC_MODEL__PATIENCE="$EPOCHS" NIGHTREC_MODEL__NEGATIVE_SAMPLING=uniform NIGHTREC_LOG=info \
    /usr/bin/time -f '{"wall": %e, "user": %U, "sys": %S, "max_rss_kb": %M}' -o "$OUT/$size/nightrec.time.json" \
    bin/nightrec --config "$config" --input "$input" --output "$out" --log-format json \
    run --date "$date" --stage train --full-retrain --force > "$OUT/$size/nightrec.summary" 2> "$OUT/$size/nightrec.log"
  echo "bench-train: $size: nightrec in fp32 ..." >&2
  NIGHTREC_RUN__THREADS="$THREADS" NIGHTREC_MODEL__PRETRAIN_EPOCHS="$PRETRAIN" NIGHTREC_MODEL__EPOCHS="$EPOCHS" \
    NIGHTREC_MODEL__PATIENCE="$EPOCHS" NIGHTREC_MODEL__NEGATIVE_SAMPLING=uniform NIGHTREC_MODEL__PRECISION=fp32 NIGHTREC_LOG=info \
    bin/nightrec --config "$config" --input "$input" --output "$out" --log-format json \
    run --date "$date" --stage train --full-retrain --force > "$OUT/$size/nightrec-fp32.summary" 2> "$OUT/$size/nightrec-fp32.log"
  echo "bench-train: $size: PyTorch eager ..." >&2
  MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 \
    /usr/bin/time -f '{"wall": %e, "user": %U, "sys": %S, "max_rss_kb": %M}' -o "$OUT/$size/torch.time.json" \
    "$TORCH_PY" bench/torch_twin.py "$out/_work/dt=$date" --config "$config" --threads "$THREADS" \
    --pretrain-epochs "$PRETRAIN" --epochs "$EPOCHS" > "$OUT/$size/torch.jsonl"
done
"$TORCH_PY" bench/train_report.py "$OUT" "$SIZES" \
  "make bench-train SIZES=\"$SIZES\" PRETRAIN=$PRETRAIN EPOCHS=$EPOCHS THREADS=$THREADS" > bench/results/train.md
cat bench/results/train.md
