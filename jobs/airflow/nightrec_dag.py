"""nightrec's nightly job as an Airflow 3 DAG.

    prepare  ->  candidates_shard[0..N-1]  ->  publish

- ``prepare``: ``nightrec run --date D`` for the stages before the
  per-user candidates (clean, trainset, text, train, embed);
- ``candidates_shard``: one dynamically mapped task per shard,
  ``nightrec run --date D --shard I/N`` (run them on as many workers as you
  have);
- ``publish``: ``nightrec run --date D``: skips what is done, assembles the
  N shards, evaluates, publishes the date, writes ``_SUCCESS`` last, and
  updates the ``nightrec_published`` asset.

The date D: the last complete day when the run starts
---------------------------------------------------------
D is the last day of behaviour read; the candidates are for the day after.
A night starts at ``NIGHTREC_NIGHT_START_HOUR`` (UTC, default 2: logs of a
day often land hours after its midnight), and D is the day that ended
before the night began:

    D = (end of the run's data interval - start hour) - 1 day

The end of the data interval is the moment a scheduled run fires, whatever
the timetable: Airflow 3 turns a cron string into a *trigger* timetable
(``ds`` is the day the run fires, a day that has only just begun), older
deployments and ``create_cron_data_intervals = True`` into a *data-interval*
timetable (``ds`` is the day before); both end their interval at the firing.
So the run that fires at 2026-11-22T02:00Z processes 2026-11-21 under
either, and so does a manual run triggered later that day (its interval
ends at the trigger, or at the last complete interval). A run without a
data interval (triggered with no logical date) uses its ``run_after``. To
process a given day, trigger the DAG with ``{"date": "YYYY-MM-DD"}`` as its
conf. The DAG itself schedules with an explicit data-interval timetable at
the start hour (``0 H * * *``, UTC), so ``ds`` and the data interval read as
the night they process.

Each date warm-starts from the model of the one before, so runs go one at a
time, in order (``max_active_runs=1``, ``depends_on_past`` on publish).

Exit codes (nightrec's contract): 1 (or a signal: killed by the OOM killer,
a lost node) is retried (``retries`` below, after ``retry_delay``, doubling);
4 (another nightrec process holds the output root and date) is retried the
same way, never in a tight loop; 2 (usage or configuration) and 3 (a
data-quality gate) fail the task at once, without retrying: a rerun cannot
fix them.

Downstream DAGs either run on the asset (``schedule=[NIGHTREC_PUBLISHED]``)
or wait for the date's ``<output>/_runs/dt=D/_SUCCESS`` with a sensor
(S3KeySensor, GCSObjectExistenceSensor, or a ``@task.sensor`` checking the
path); while ``_SUCCESS`` exists the date's folders hold exactly the files
its ``manifest.json`` lists.

Settings come from the environment of the workers (and of the DAG
processor, for the start hour):
    NIGHTREC_BIN               the nightrec binary (default: ``nightrec`` on PATH)
    NIGHTREC_CONFIG            the job configuration (TOML), read by nightrec itself
    NIGHTREC_INPUT             input root URL, NIGHTREC_OUTPUT output root URL (likewise)
    NIGHTREC_NIGHT_START_HOUR  the hour (UTC, 0-23) a night starts (default 2)
    NIGHTREC_SHARDS            number of candidate shards (default 4)
    NIGHTREC_WORKDIR           working directory of the nightrec processes
    NIGHTREC_RETRIES           retries of a task that exits 1 or 4 (default 2)
"""

from __future__ import annotations

import os
import subprocess
from datetime import date, datetime, timedelta, timezone

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, get_current_context, task

try:  # Airflow 3's task SDK; older layouts keep it in airflow.exceptions
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # pragma: no cover
    from airflow.exceptions import AirflowFailException

NIGHTREC = os.environ.get("NIGHTREC_BIN", "nightrec")
SHARDS = int(os.environ.get("NIGHTREC_SHARDS", "4"))
WORKDIR = os.environ.get("NIGHTREC_WORKDIR") or None
START_HOUR = int(os.environ.get("NIGHTREC_NIGHT_START_HOUR", "2"))
if not 0 <= START_HOUR <= 23:
    raise ValueError(f"NIGHTREC_NIGHT_START_HOUR must be an hour, 0-23: {START_HOUR}")
PREPARE_STAGES = ["clean", "trainset", "text", "train", "embed"]

#: Updated each time a date is published; schedule downstream DAGs on it.
NIGHTREC_PUBLISHED = Asset("nightrec_published")

#: nightrec's exit codes that a retry cannot fix.
NO_RETRY = {2: "usage or configuration error", 3: "data-quality gate failed"}
#: Exit codes retried after the task's delay (and a process ended by a signal).
RETRIED = {1: "failed (may be transient)", 4: "another nightrec process holds this output root and date"}


def nightrec(*args: str) -> None:
    """Run nightrec; its logs go to the task log. Exit 1 or 4, or a signal
    (a negative return code: SIGKILL from the OOM killer, a lost node),
    raises an error Airflow retries after its delay; exit 2 or 3 fails
    without retrying."""
    cmd = [NIGHTREC, *args]
    code = subprocess.run(cmd, cwd=WORKDIR, check=False).returncode
    if code == 0:
        return
    if code in NO_RETRY:
        raise AirflowFailException(f"{' '.join(cmd)} exited {code} ({NO_RETRY[code]}); not retried")
    why = RETRIED.get(code) or (f"killed by signal {-code}" if code < 0 else "unexpected exit code")
    raise RuntimeError(f"{' '.join(cmd)} exited {code} ({why}); will be retried")


def night_date(context) -> str:
    """The date a run processes: ``conf["date"]`` when given, else the last
    day that was complete when the night began (see the module's doc)."""
    run = context["dag_run"]
    asked = (getattr(run, "conf", None) or {}).get("date")
    if asked:
        return date.fromisoformat(str(asked)).isoformat()
    end = context.get("data_interval_end") or getattr(run, "data_interval_end", None) or run.run_after
    end = end.astimezone(timezone.utc)
    return ((end - timedelta(hours=START_HOUR)).date() - timedelta(days=1)).isoformat()


def current_date() -> str:
    return night_date(get_current_context())


with DAG(
    dag_id="nightrec",
    description="nightrec: behaviour logs in, tomorrow's recommendation candidates out",
    schedule=CronDataIntervalTimetable(f"0 {START_HOUR} * * *", timezone="UTC"),
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
        nightrec("run", "--date", current_date(), *[f"--stage={s}" for s in PREPARE_STAGES])

    @task
    def candidates_shard(index: int) -> None:
        nightrec("run", "--date", current_date(), "--shard", f"{index}/{SHARDS}")

    @task(outlets=[NIGHTREC_PUBLISHED], depends_on_past=True)
    def publish() -> None:
        nightrec("run", "--date", current_date())

    prepare() >> candidates_shard.expand(index=list(range(SHARDS))) >> publish()
