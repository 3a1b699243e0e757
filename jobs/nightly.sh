#!/usr/bin/env bash
# One night of nightrec for cron or a systemd timer (jobs/crontab,
# jobs/systemd/): `nightrec run --date D`, retried as the Airflow DAG
# retries a task. D, unless given, is the last day that was complete when
# the night began (NIGHTREC_NIGHT_START_HOUR, UTC, default 2): the same
# rule as the DAG's, so cron at 02:30 UTC processes yesterday.
#
# Retried (after NIGHTREC_RETRY_DELAY_S, doubled each time): exit 1
# (anything transient), 4 (another nightrec process holds this output root
# and date) and death by a signal (128 + N: 137 is SIGKILL, the kernel's
# OOM killer). Not retried: 2 (usage or configuration) and 3 (a
# data-quality gate): a rerun cannot fix them. Exits with nightrec's last
# exit code.
#
#   jobs/nightly.sh [YYYY-MM-DD]
#   NIGHTREC_BIN (default: nightrec on PATH), NIGHTREC_RETRIES (default 2),
#   NIGHTREC_RETRY_DELAY_S (default 300, doubled each retry),
#   NIGHTREC_NIGHT_START_HOUR (default 2); nightrec reads NIGHTREC_CONFIG,
#   NIGHTREC_INPUT, NIGHTREC_OUTPUT itself.
set -uo pipefail
bin="${NIGHTREC_BIN:-nightrec}"
start_hour="${NIGHTREC_NIGHT_START_HOUR:-2}"
date="${1:-$(date -u -d "@$(( $(date -u +%s) - start_hour * 3600 - 86400 ))" +%F)}"
retries="${NIGHTREC_RETRIES:-2}"
delay="${NIGHTREC_RETRY_DELAY_S:-300}"
attempt=0
while true; do
  "$bin" run --date "$date"
  rc=$?
  case $rc in
    1 | 4) retry=1 ;;
    *) retry=$((rc > 128)) ;;
  esac
  if [[ $retry -eq 0 || $attempt -ge $retries ]]; then
    exit "$rc"
  fi
  attempt=$((attempt + 1))
  echo "nightly.sh: nightrec exited $rc for $date; retry $attempt of $retries in ${delay}s" >&2
  sleep "$delay"
  delay=$((delay * 2))
done
