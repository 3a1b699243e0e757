#!/usr/bin/env bash
# A Python virtual environment with Apache Airflow 3 for the DAG test
# (tests/airflow.rs): apache-airflow pinned, every dependency pinned by
# jobs/airflow/constraints.txt (made with `pip freeze` from a clean install;
# Airflow's own constraint files live on GitHub, which this machine cannot
# reach), wheels only, from PyPI, cached outside the repository.
# Prints the venv's python on stdout. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/venv.sh"
constraints="$here/../jobs/airflow/constraints.txt"
# The name carries the constraints' hash: new pins make a new venv.
pinned_venv "venv-airflow-$(sha256sum "$constraints" | cut -c1-12)" "apache-airflow==3.3.2" -c "$constraints"
