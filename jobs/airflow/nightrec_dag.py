"""nightrec's nightly job as an Airflow 3 DAG.

    prepare  ->  candidates_shard[0..N-1]  ->  publish

- ``prepare``: ``nightrec run --date {{ ds }}`` for the stages before the
  per-user candidates (clean, trainset, text, train, embed);
- ``candidates_shard``: one dynamically mapped task per shard,
  ``nightrec run --date {{ ds }} --shard I/N`` (run them on as many workers
  as you have);
- ``publish``: ``nightrec run --date {{ ds }}``: skips what is done,
  assembles the N shards, evaluates, publishes the date, writes ``_SUCCESS``
  last, and updates the ``nightrec_published`` asset.

The logical date is the last day of behaviour read (``--date``); the
candidates are for the day after. Each date warm-starts from the model of
the one before, so runs go one at a time, in order (``max_active_runs=1``,
``depends_on_past`` on publish).

Exit codes (nightrec's contract): 1 is retried (``retries`` below); 2 (usage
or configuration) and 3 (a data-quality gate) fail the task at once, without
retrying: a rerun cannot fix them.

Downstream DAGs either run on the asset (``schedule=[NIGHTREC_PUBLISHED]``)
or wait for the date's ``<output>/_runs/dt={{ ds }}/_SUCCESS`` with a sensor
(S3KeySensor, GCSObjectExistenceSensor, or a ``@task.sensor`` checking the
path); while ``_SUCCESS`` exists the date's folders hold exactly the files
its ``manifest.json`` lists.

Settings come from the environment of the workers:
    NIGHTREC_BIN        the nightrec binary (default: ``nightrec`` on PATH)
    NIGHTREC_CONFIG     the job configuration (TOML), read by nightrec itself
    NIGHTREC_INPUT      input root URL, NIGHTREC_OUTPUT output root URL (likewise)
    NIGHTREC_SHARDS     number of candidate shards (default 4)
    NIGHTREC_WORKDIR    working directory of the nightrec processes
    NIGHTREC_RETRIES    retries of a task that exits 1 (default 2)
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Asset, get_current_context, task

try:  # Airflow 3's task SDK; older layouts keep it in airflow.exceptions
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # pragma: no cover
    from airflow.exceptions import AirflowFailException

NIGHTREC = os.environ.get("NIGHTREC_BIN", "nightrec")
SHARDS = int(os.environ.get("NIGHTREC_SHARDS", "4"))
WORKDIR = os.environ.get("NIGHTREC_WORKDIR") or None
PREPARE_STAGES = ["clean", "trainset", "text", "train", "embed"]

#: Updated each time a date is published; schedule downstream DAGs on it.
NIGHTREC_PUBLISHED = Asset("nightrec_published")

#: nightrec's exit codes that a retry cannot fix.
NO_RETRY = {2: "usage or configuration error", 3: "data-quality gate failed"}


def nightrec(*args: str) -> None:
    """Run nightrec; its logs go to the task log. Exit 1 (or a signal)
    raises an error Airflow retries; exit 2 or 3 fails without retrying."""
    cmd = [NIGHTREC, *args]
    code = subprocess.run(cmd, cwd=WORKDIR, check=False).returncode
    if code == 0:
        return
    if code in NO_RETRY:
        raise AirflowFailException(f"{' '.join(cmd)} exited {code} ({NO_RETRY[code]}); not retried")
    raise RuntimeError(f"{' '.join(cmd)} exited {code}; will be retried")


def logical_date() -> str:
    return get_current_context()["ds"]


with DAG(
    dag_id="nightrec",
    description="nightrec: behaviour logs in, tomorrow's recommendation candidates out",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": int(os.environ.get("NIGHTREC_RETRIES", "2")),
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
    },
    tags=["nightrec"],
) as dag:

    @task
    def prepare() -> None:
        nightrec("run", "--date", logical_date(), *[f"--stage={s}" for s in PREPARE_STAGES])

    @task
    def candidates_shard(index: int) -> None:
        nightrec("run", "--date", logical_date(), "--shard", f"{index}/{SHARDS}")

    @task(outlets=[NIGHTREC_PUBLISHED], depends_on_past=True)
    def publish() -> None:
        nightrec("run", "--date", logical_date())

    prepare() >> candidates_shard.expand(index=list(range(SHARDS))) >> publish()

