#!/usr/bin/env bash
# A Python virtual environment with PyTorch 2.11.0 for the PyTorch twin of
# `make bench-train` only: nightrec, `make run` and `make test` never need
# it. PyPI's Linux torch wheel imports only with its CUDA wheels installed
# (several GB), even on a CPU, so this is set up on demand, pinned, from
# PyPI, cached outside the repository. Wheels already fetched into
# $NIGHTREC_CACHE/torch-wheels are reused.
# Prints the venv's python on stdout. Idempotent.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
wheels="${NIGHTREC_CACHE:-$HOME/.cache/nightrec}/torch-wheels"
mkdir -p "$wheels"
py=$(pinned_venv venv-torch-1 "torch==2.11.0 pyarrow==26.0.1 numpy==2.4.6" --find-links "$wheels")
"$py" -c 'import torch; assert torch.__version__.split("+")[0] == "2.11.0", torch.__version__' >&2
echo "$py"
