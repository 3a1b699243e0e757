"""The reference for `make bench-sql`: nightrec's own clean and trainset SQL
files (sql/clean/*.sql, sql/trainset/*.sql), run by DuckDB over the same
input files, writing the same tables as Parquet.

Same work as nightrec, table by table:
- every row of every format is read as text with its file and position,
  malformed JSON lines and CSV rows kept (not skipped), straight from the
  files (no table is materialised first);
- the same statements, in the same order, with the same parameters (read
  from the job file nightrec runs with); a handful of DataFusion function
  names are translated to DuckDB's (`translate` below), nothing else;
- each table is written once as Parquet and read back from Parquet by the
  statements after it, like nightrec's work tables (an in-memory database:
  nothing else is persisted);
- items and users go through their quarantine too, and data_quality's
  per-file counts (file_counts.sql, quarantine_counts.sql) are computed.

What remains different: DuckDB's CSV reader reports rows with the wrong
number of fields in a rejects table, which is appended to events_ruled
as a second file (nightrec's reader emits them in place), and CSV row
positions count rows, not lines. nightrec's reader also counts each
file's rows as it reads them; here that count is taken from events_ruled.

usage: duckdb_clean_trainset.py JOB_TOML INPUT_DIR OUTPUT_DIR YYYY-MM-DD [threads] [memory_limit]
"""

import datetime as dt
import glob
import os
import re
import shutil
import sys
import time
import tomllib

import duckdb

job_file, inp, out, date = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
threads = int(sys.argv[5]) if len(sys.argv) > 5 else os.cpu_count()
memory = sys.argv[6] if len(sys.argv) > 6 else "2GB"
sql_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sql")
with open(job_file, "rb") as f:
    job = tomllib.load(f)
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "jobs", "nightly.toml"), "rb") as f:
    defaults = tomllib.load(f)
for section, values in job.items():
    if isinstance(values, dict):
        defaults.setdefault(section, {}).update(values)
job = defaults
ts_cfg = job["trainset"]
run_day = dt.date.fromisoformat(date)
win_start = run_day - dt.timedelta(days=job["run"]["lookback_days"] - 1)
win_end = run_day + dt.timedelta(days=1)
at = lambda d: dt.datetime(d.year, d.month, d.day)  # noqa: E731

shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute(f"SET memory_limit = '{memory}'")
con.execute("SET preserve_insertion_order = false")
con.execute(f"SET temp_directory = '{out}/_spill'")
con.execute("SET TimeZone = 'UTC'")


def translate(sql):
    """DataFusion function names and forms → DuckDB's."""
    sql = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    sql = sql.replace("to_unixtime(", "epoch(").replace("make_array(", "list_value(")
    sql = sql.replace("first_value(", "first(")
    sql = sql.replace(
        "CAST(to_timestamp_millis(TRY_CAST(TRIM(ts) AS BIGINT)) AS TIMESTAMP)", "epoch_ms(TRY_CAST(TRIM(ts) AS BIGINT))"
    )
    # RFC 3339 with an offset: DuckDB parses it as TIMESTAMPTZ (UTC session).
    sql = sql.replace("TRY_CAST(TRIM(ts) AS TIMESTAMP)", "TRY_CAST(TRY_CAST(TRIM(ts) AS TIMESTAMPTZ) AS TIMESTAMP)")

    def struct(m):
        pairs = re.findall(r"'(\w+)',\s*([\w.]+)", m.group(1))
        return "struct_pack(" + ", ".join(f"{k} := {v}" for k, v in pairs) + ")"

    return re.sub(r"named_struct\(([^()]*)\)", struct, sql, flags=re.S)


def in_window(path):
    for part in path.split("/"):
        if part.startswith("dt="):
            d = dt.date.fromisoformat(part[3:])
            # The day before the window and the window's days (nightrec's Window::reads_partition).
            return win_start - dt.timedelta(days=1) <= d <= run_day
    return True


def text_select(src, present, columns, source, position, malformed="NULL"):
    cols = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" if c in present else f"NULL::VARCHAR AS {c}" for c in columns)
    return f"SELECT {cols}, {source} AS _source, {position} AS _position, {malformed} AS _malformed FROM {src}"


def raw_view(dataset, columns):
    """raw_<dataset>: every file of the dataset as text rows; CSV rejects go to rej_<n> tables."""
    parts, rejects = [], []
    for f in sorted(glob.glob(f"{inp}/{dataset}/**/*", recursive=True)):
        if not os.path.isfile(f) or not in_window(f) or os.path.basename(f).startswith(("_", ".")):
            continue
        url = "file://" + os.path.abspath(f)
        if f.endswith(".parquet"):
            present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{f}')").fetchall()}
            parts.append(text_select(f"read_parquet('{f}', file_row_number=true)", present, columns, f"'{url}'", "file_row_number + 1"))
        elif f.endswith((".jsonl", ".ndjson", ".json")):
            # Each line as text, so that a broken line is kept, not skipped.
            lines = (
                f"(SELECT line, n, COALESCE(json_valid(line) AND json_type(CASE WHEN json_valid(line) THEN line END) = 'OBJECT', false) AS ok "
                f"FROM (SELECT line, ROW_NUMBER() OVER () AS n FROM read_csv('{f}', columns={{'line': 'VARCHAR'}}, "
                f"header=false, delim='\\x1f', quote='', escape='', auto_detect=false)) WHERE TRIM(line) <> '')"
            )
            cols = ", ".join(f"json_extract_string(CASE WHEN ok THEN line ELSE '{{}}' END, '$.{c}') AS {c}" for c in columns)
            parts.append(f"SELECT {cols}, '{url}' AS _source, n AS _position, CASE WHEN ok THEN NULL ELSE line END AS _malformed FROM {lines}")
        elif f.endswith(".csv"):
            present = set(open(f).readline().strip().split(","))
            n = len(rejects)
            name = f"rej_{dataset}_{n}"
            src = f"read_csv('{f}', all_varchar=true, header=true, store_rejects=true, rejects_table='{name}', rejects_scan='scan_{dataset}_{n}')"
            parts.append(text_select(src, present, columns, f"'{url}'", "ROW_NUMBER() OVER () + 1"))
            rejects.append((name, url))
    if not parts:
        parts.append(text_select("(SELECT 1 WHERE false)", set(), columns, "''", "0"))
    con.execute(f"CREATE OR REPLACE VIEW raw_{dataset} AS " + "\nUNION ALL\n".join(parts))
    return rejects


timings = {}


def write(table, sql, params=None):
    """Run one statement into <out>/<table>/part-0.parquet and read it back from there."""
    t = time.time()
    os.makedirs(f"{out}/{table}", exist_ok=True)
    con.execute(f"COPY ({sql}) TO '{out}/{table}/part-0.parquet' (FORMAT parquet, COMPRESSION zstd)", params or {})
    con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet('{out}/{table}/*.parquet')")
    timings[table] = time.time() - t


def run(stage, table, params=None):
    with open(f"{sql_dir}/{stage}/{table}.sql") as f:
        write(table, translate(f.read()), params)


def append_rejects(table, rejects, columns, rule):
    """CSV rows DuckDB rejected: appended to the table as malformed rows."""
    parts = [
        f"SELECT '{url}' AS source, line AS position, csv_line AS raw FROM (SELECT DISTINCT line, csv_line FROM {name})"
        for name, url in rejects
        if con.execute(f"SELECT COUNT(*) FROM duckdb_tables() WHERE table_name = '{name}'").fetchone()[0]
    ]
    if not parts:
        return
    have = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
    cols = ", ".join(
        c if c in ("source", "position", "raw") else ("'malformed' AS reason" if c == "reason" else f"NULL AS {c}") for c in have
    )
    con.execute(
        f"COPY (SELECT {cols} FROM ({' UNION ALL '.join(parts)})) TO '{out}/{table}/part-1.parquet' (FORMAT parquet, COMPRESSION zstd)"
    )
    con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet('{out}/{table}/*.parquet')")


EVENTS = ["event_id", "user_id", "item_id", "event_type", "ts", "session_id", "query", "rating", "quantity", "price"]
ITEMS = ["item_id", "title", "description", "category", "brand", "price", "in_stock", "created_at", "image_embedding"]
USERS = ["user_id", "signup_ts"]
start_all = time.time()
rejected = {ds: raw_view(ds, cols) for ds, cols in (("events", EVENTS), ("items", ITEMS), ("users", USERS))}
c = job["clean"]
# input_files: the timestamps each partitioned event file may hold (nightrec builds it from its pin).
tol = dt.timedelta(hours=c["partition_tolerance_hours"])
spans = []
for f in sorted(glob.glob(f"{inp}/events/**/*", recursive=True)):
    part = next((p[3:] for p in f.split("/") if p.startswith("dt=")), None)
    if os.path.isfile(f) and part and in_window(f):
        day = dt.datetime.combine(dt.date.fromisoformat(part), dt.time())
        spans.append(f"('file://{os.path.abspath(f)}', TIMESTAMP '{day - tol}', TIMESTAMP '{day + dt.timedelta(days=1) + tol}')")
con.execute(
    "CREATE OR REPLACE VIEW input_files AS SELECT * FROM (VALUES "
    + (", ".join(spans) or "(NULL, NULL::TIMESTAMP, NULL::TIMESTAMP)")
    + ") t(source, ts_from, ts_to)"
)
run("clean", "items_checked")
append_rejects("items_checked", rejected["items"], ITEMS, None)
run("clean", "items")
run("clean", "events_ruled", {"window_start": at(win_start), "window_end": at(win_end)})
append_rejects("events_ruled", rejected["events"], EVENTS, None)
run("clean", "events_checked", {"bot_per_minute": c["bot_max_events_per_minute"], "bot_per_day": c["bot_max_events_per_day"]})
run("clean", "users_checked")
append_rejects("users_checked", rejected["users"], USERS, None)
run("clean", "users")
run("clean", "clean_events", {"session_gap_seconds": c["session_gap_minutes"] * 60})
run("clean", "quarantine")
# files_read: the rows of each file (nightrec's reader counts them as it reads).
con.execute("""CREATE OR REPLACE VIEW files_read AS
    SELECT source, 'events' AS dataset, COUNT(*) AS rows_read, false AS unreadable FROM events_checked GROUP BY source
    UNION ALL SELECT source, 'items', COUNT(*), false FROM items_checked GROUP BY source
    UNION ALL SELECT source, 'users', COUNT(*), false FROM users_checked GROUP BY source""")
run("clean", "file_counts")
run("clean", "quarantine_counts")

weights = ", ".join(f"('{k}', {float(v)})" for k, v in ts_cfg["event_weights"].items())
con.execute(f"CREATE OR REPLACE VIEW event_weights AS SELECT * FROM (VALUES {weights}) t(event_type, weight)")
run("trainset", "item_index")
test, valid = ts_cfg["test_steps"], ts_cfg["valid_steps"]
run("trainset", "steps", {"max_length": ts_cfg["max_sequence_length"] + test + valid, "test_steps": test, "valid_steps": valid})
run("trainset", "sequences")
run("trainset", "interactions")
run("trainset", "item_cooccurrence", {"window": ts_cfg["cooccurrence_window"]})
run("trainset", "item_text")

tables = ["events_checked", "clean_events", "quarantine", "steps", "sequences", "interactions", "item_cooccurrence"]
rows = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
print({"seconds": round(time.time() - start_all, 2), "rows": rows, "timings": {k: round(v, 2) for k, v in timings.items()}})
