#!/usr/bin/env bash
# One night of nightrec for cron or a systemd timer (jobs/crontab,
# jobs/systemd/): `nightrec run --date D`, D = yesterday (UTC) unless given,
# retried on exit 1 only, as an Airflow task would be. Exit 2 (usage or
# configuration) and 3 (a data-quality gate) end it at once: retrying
# cannot fix them. Exits with nightrec's last exit code.
#
#   jobs/nightly.sh [YYYY-MM-DD]
#   NIGHTREC_BIN (default: nightrec on PATH), NIGHTREC_RETRIES (default 2),
#   NIGHTREC_RETRY_DELAY_S (default 300, doubled each retry); nightrec reads
#   NIGHTREC_CONFIG, NIGHTREC_INPUT, NIGHTREC_OUTPUT itself.
set -uo pipefail
bin="${NIGHTREC_BIN:-nightrec}"
date="${1:-$(date -u -d yesterday +%F)}"
retries="${NIGHTREC_RETRIES:-2}"
delay="${NIGHTREC_RETRY_DELAY_S:-300}"
attempt=0
while true; do
  "$bin" run --date "$date"
  rc=$?
  if [[ $rc -ne 1 || $attempt -ge $retries ]]; then
    exit "$rc"
  fi
  attempt=$((attempt + 1))
  echo "nightly.sh: nightrec exited 1 for $date; retry $attempt of $retries in ${delay}s" >&2
  sleep "$delay"
  delay=$((delay * 2))
done
