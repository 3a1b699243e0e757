#!/usr/bin/env bash
# A Python virtual environment with the independent readers the tests use
# (pyarrow, DuckDB), a real S3-protocol server for the S3 round trip
# (moto), Selenium to drive Chromium through the report (the browser
# itself: scripts/setup-chromium.sh) and the benchmarks' references (NumPy,
# FAISS), pinned, from PyPI, cached outside the repository.
# Prints the venv's python on stdout. Idempotent.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
pinned_venv venv-readers-2 "pyarrow==26.0.1 duckdb==1.5.6 moto[server]==5.2.5 numpy==2.4.6 faiss-cpu==1.15.1 selenium==4.50.0"
