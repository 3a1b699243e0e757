#!/usr/bin/env bash
# A Python virtual environment with the independent readers the tests use
# (pyarrow, DuckDB), a real S3-protocol server for the S3 round trip
# (moto) and the benchmarks' references (NumPy, FAISS), pinned, from PyPI,
# cached outside the repository.
# Prints the venv's python on stdout. Idempotent.
set -euo pipefail
CACHE="${NIGHTREC_CACHE:-$HOME/.cache/nightrec}"
VENV="$CACHE/venv-readers-1"
REQS="pyarrow==26.0.1 duckdb==1.5.6 moto[server]==5.2.5 numpy==2.4.6 faiss-cpu==1.15.1"
if [[ -f "$VENV/.complete" ]] && [[ "$(cat "$VENV/.complete")" == "$REQS" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV" >&2
# --only-binary: wheels only (no compiling); pip checks each wheel's hash
# against the index's record of it.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: $REQS >&2
echo "$REQS" > "$VENV/.complete"
echo "$VENV/bin/python"
