"""The reference for `make bench-sql`: nightrec's clean and trainset SQL
logic, written for DuckDB, over the same input files, writing the same
tables as Parquet.

It keeps what nightrec does that costs work: every row of every format
read as text with its file and line, malformed JSON lines and CSV rows
kept (not skipped), the same rule order and reason codes, dedupe, bot
limits, session derivation, the collapsed and capped step sequences with
their time split, interactions, popularity, co-occurrence and item text.

Its parameters (lookback, session gap, bot limits, sequence cap, holdouts,
popularity window, co-occurrence window, event weights) are read from the
same job file that nightrec runs with.

usage: duckdb_clean_trainset.py JOB_TOML INPUT_DIR OUTPUT_DIR YYYY-MM-DD [threads] [memory_limit]
"""

import datetime as dt
import glob
import os
import shutil
import sys
import time
import tomllib

import duckdb

job_file, inp, out, date = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
threads = int(sys.argv[5]) if len(sys.argv) > 5 else os.cpu_count()
memory = sys.argv[6] if len(sys.argv) > 6 else "2GB"
with open(job_file, "rb") as f:
    job = tomllib.load(f)
LOOKBACK = job["run"]["lookback_days"]
GAP_S = job["clean"]["session_gap_minutes"] * 60
BOT_MIN = job["clean"]["bot_max_events_per_minute"]
BOT_DAY = job["clean"]["bot_max_events_per_day"]
ts_cfg = job["trainset"]
TEST, VALID = ts_cfg["test_steps"], ts_cfg["valid_steps"]
MAX_LEN = ts_cfg["max_sequence_length"] + TEST + VALID
POP_DAYS, WINDOW = ts_cfg["popularity_days"], ts_cfg["cooccurrence_window"]
WEIGHTS = ", ".join(f"('{k}', {float(v)})" for k, v in ts_cfg["event_weights"].items())

run_day = dt.date.fromisoformat(date)
win_start = run_day - dt.timedelta(days=LOOKBACK - 1)
win_end = run_day + dt.timedelta(days=1)
pop_start = run_day - dt.timedelta(days=POP_DAYS - 1)

shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
# A database file, like nightrec's Parquet work tables on disk: with an
# in-memory database every intermediate table counts against memory_limit.
con = duckdb.connect(f"{out}/work.duckdb")
con.execute(f"SET threads = {threads}")
con.execute(f"SET memory_limit = '{memory}'")
# DuckDB's own advice for large jobs under a memory limit.
con.execute("SET preserve_insertion_order = false")
con.execute(f"SET temp_directory = '{out}/_spill'")

COLS = ["event_id", "user_id", "item_id", "event_type", "ts", "session_id", "query", "rating", "quantity", "price"]


def in_window(path):
    for part in path.split("/"):
        if part.startswith("dt="):
            d = dt.date.fromisoformat(part[3:])
            return win_start - dt.timedelta(days=1) <= d <= win_end
    return True


def text_select(src_sql, present, source_expr, position_expr, malformed_expr="NULL"):
    cols = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" if c in present else f"NULL::VARCHAR AS {c}" for c in COLS)
    return f"SELECT {cols}, {source_expr} AS _source, {position_expr} AS _position, {malformed_expr} AS _malformed FROM {src_sql}"


parts = []
for f in sorted(glob.glob(f"{inp}/events/**/*", recursive=True)):
    if not os.path.isfile(f) or not in_window(f):
        continue
    url = "file://" + os.path.abspath(f)
    if f.endswith(".parquet"):
        present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{f}')").fetchall()}
        parts.append(text_select(f"read_parquet('{f}', file_row_number=true)", present, f"'{url}'", "file_row_number + 1"))
    elif f.endswith((".jsonl", ".ndjson", ".json")):
        # Each line as text, so that a broken line is kept, not skipped.
        lines = (
            f"(SELECT line, n, COALESCE(json_valid(line) AND json_type(CASE WHEN json_valid(line) THEN line END) = 'OBJECT', false) AS ok "
            f"FROM (SELECT line, ROW_NUMBER() OVER () AS n FROM read_csv('{f}', columns={{'line': 'VARCHAR'}}, "
            f"header=false, delim='\\x1f', quote='', escape='', auto_detect=false)) WHERE TRIM(line) <> '')"
        )
        cols = ", ".join(
            f"json_extract_string(CASE WHEN ok THEN line ELSE '{{}}' END, '$.{c}') AS {c}" for c in COLS
        )
        parts.append(
            f"SELECT {cols}, '{url}' AS _source, n AS _position, CASE WHEN ok THEN NULL ELSE line END AS _malformed FROM {lines}"
        )
    elif f.endswith(".csv"):
        header = open(f).readline().strip().split(",")
        present = set(header)
        # Rows with the wrong field count land in a rejects table: kept, like nightrec's malformed rows.
        i = len(parts)
        con.execute(
            f"CREATE TEMP TABLE csv_{i} AS SELECT * FROM read_csv('{f}', all_varchar=true, header=true, "
            f"store_rejects=true, rejects_table='rej_{i}', rejects_scan='scan_{i}')"
        )
        parts.append(text_select(f"csv_{i}", present, f"'{url}'", "ROW_NUMBER() OVER () + 1"))
        parts.append(
            f"SELECT {', '.join(f'NULL::VARCHAR AS {c}' for c in COLS)}, '{url}' AS _source, line AS _position, "
            f"csv_line AS _malformed FROM (SELECT DISTINCT line, csv_line FROM rej_{i})"
        )

timings = {}
start_all = time.time()


def run(name, sql):
    t = time.time()
    con.execute(f"CREATE OR REPLACE TABLE {name} AS {sql}")
    timings[name] = time.time() - t


con.execute("CREATE OR REPLACE VIEW raw_events AS " + "\nUNION ALL\n".join(parts))
con.execute(
    f"CREATE OR REPLACE VIEW raw_items AS SELECT *, filename AS _source FROM read_json('{inp}/items/*', format='newline_delimited', filename=true, columns={{'item_id':'VARCHAR','title':'VARCHAR','description':'VARCHAR','category':'VARCHAR','brand':'VARCHAR','price':'VARCHAR','in_stock':'VARCHAR','created_at':'VARCHAR'}})"
)

run("items", """
SELECT item_id, title, description, category, brand, TRY_CAST(price AS DOUBLE) AS price,
       COALESCE(TRY_CAST(in_stock AS BOOLEAN), TRUE) AS in_stock, TRY_CAST(created_at AS TIMESTAMP) AS created_at
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY item_id ORDER BY _source DESC) AS k FROM raw_items WHERE item_id IS NOT NULL)
WHERE k = 1""")

run("events_checked", f"""
WITH norm AS (
    SELECT _source AS source, _position AS position,
        _malformed IS NOT NULL AS malformed,
        COALESCE(_malformed, concat_ws('|', COALESCE(event_id, ''), COALESCE(user_id, ''), COALESCE(item_id, ''),
            COALESCE(event_type, ''), COALESCE(ts, ''), COALESCE(session_id, ''), COALESCE(query, ''),
            COALESCE(rating, ''), COALESCE(quantity, ''), COALESCE(price, ''))) AS raw,
        NULLIF(TRIM(event_id), '') AS event_id, NULLIF(TRIM(user_id), '') AS user_id,
        NULLIF(TRIM(item_id), '') AS item_id, LOWER(TRIM(event_type)) AS event_type,
        CASE WHEN regexp_full_match(TRIM(ts), '-?[0-9]{{1,15}}') THEN epoch_ms(TRY_CAST(TRIM(ts) AS BIGINT))
             ELSE TRY_CAST(TRY_CAST(TRIM(ts) AS TIMESTAMPTZ) AS TIMESTAMP) END AS ts,
        NULLIF(TRIM(session_id), '') AS session_id, NULLIF(TRIM(query), '') AS query,
        TRY_CAST(NULLIF(TRIM(rating), '') AS DOUBLE) AS rating,
        TRY_CAST(NULLIF(TRIM(quantity), '') AS DOUBLE) AS quantity,
        TRY_CAST(NULLIF(TRIM(price), '') AS DOUBLE) AS price,
        (NULLIF(TRIM(rating), '') IS NOT NULL AND TRY_CAST(TRIM(rating) AS DOUBLE) IS NULL)
          OR (NULLIF(TRIM(quantity), '') IS NOT NULL AND TRY_CAST(TRIM(quantity) AS DOUBLE) IS NULL)
          OR (NULLIF(TRIM(price), '') IS NOT NULL AND TRY_CAST(TRIM(price) AS DOUBLE) IS NULL) AS bad_number
    FROM raw_events
),
ruled AS (
    SELECT n.*, CASE
        WHEN n.malformed OR n.bad_number THEN 'malformed'
        WHEN n.user_id IS NULL THEN 'missing_id'
        WHEN n.item_id IS NULL AND n.event_type IS DISTINCT FROM 'search' THEN 'missing_id'
        WHEN n.event_type IS NULL OR n.event_type NOT IN ('view','click','add_to_cart','purchase','search','rating','review') THEN 'unknown_event_type'
        WHEN n.ts IS NULL THEN 'bad_timestamp'
        WHEN n.ts < TIMESTAMP '{win_start}' OR n.ts >= TIMESTAMP '{win_end}' THEN 'out_of_window'
        WHEN n.item_id IS NOT NULL AND c.item_id IS NULL THEN 'unknown_item'
    END AS reason
    FROM norm n LEFT JOIN (SELECT DISTINCT item_id FROM items) c ON n.item_id = c.item_id
),
ranked AS (
    SELECT r.*, ROW_NUMBER() OVER (PARTITION BY r.reason IS NULL,
        COALESCE(r.event_id, concat_ws('|', r.user_id, COALESCE(r.item_id, ''), r.event_type, CAST(r.ts AS VARCHAR), COALESCE(r.query, '')))
        ORDER BY r.source, r.position) AS copy_no
    FROM ruled r
),
deduped AS (
    SELECT source, position, raw, event_id, user_id, item_id, event_type, ts, session_id, query, rating, quantity, price,
        COALESCE(reason, CASE WHEN copy_no > 1 THEN 'duplicate' END) AS reason
    FROM ranked
),
bots AS (
    SELECT user_id FROM (SELECT user_id, date_trunc('minute', ts) m, COUNT(*) c FROM deduped WHERE reason IS NULL GROUP BY ALL) GROUP BY user_id HAVING MAX(c) > {BOT_MIN}
    UNION
    SELECT user_id FROM (SELECT user_id, date_trunc('day', ts) d, COUNT(*) c FROM deduped WHERE reason IS NULL GROUP BY ALL) GROUP BY user_id HAVING MAX(c) > {BOT_DAY}
)
SELECT d.* EXCLUDE (reason), CASE WHEN d.reason IS NULL AND b.user_id IS NOT NULL THEN 'bot' ELSE d.reason END AS reason
FROM deduped d LEFT JOIN bots b ON d.user_id = b.user_id""")

run("clean_events", f"""
WITH gaps AS (
    SELECT *, CASE WHEN LAG(ts) OVER w IS NULL OR epoch(ts) - epoch(LAG(ts) OVER w) > {GAP_S} THEN 1 ELSE 0 END AS starts
    FROM events_checked WHERE reason IS NULL
    WINDOW w AS (PARTITION BY user_id ORDER BY ts, source, position)
)
SELECT event_id, user_id, item_id, event_type, ts,
    COALESCE(session_id, user_id || '#' || CAST(SUM(starts) OVER (PARTITION BY user_id ORDER BY ts, source, position
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS VARCHAR)) AS session_id,
    query, rating, quantity, price
FROM gaps""")

run("quarantine", "SELECT 'events' AS dataset, source, position, reason, raw FROM events_checked WHERE reason IS NOT NULL")
run("item_index", "SELECT CAST(ROW_NUMBER() OVER (ORDER BY item_id) AS INT) AS item_idx, * FROM items")
run("event_weights", f"SELECT * FROM (VALUES {WEIGHTS}) t(event_type, weight)")
run("steps", f"""
WITH ev AS (
    SELECT e.user_id, i.item_idx, e.event_type, e.ts, w.weight,
        CASE WHEN LAG(i.item_idx) OVER (PARTITION BY e.user_id ORDER BY e.ts, i.item_idx, e.event_type) IS DISTINCT FROM i.item_idx THEN 1 ELSE 0 END AS new_run
    FROM clean_events e JOIN item_index i ON e.item_id = i.item_id JOIN event_weights w ON e.event_type = w.event_type
    WHERE e.event_type <> 'search'
),
runs AS (SELECT *, SUM(new_run) OVER (PARTITION BY user_id ORDER BY ts, item_idx, event_type ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS run FROM ev),
collapsed AS (
    SELECT user_id, run, MIN(item_idx) AS item_idx, MIN(ts) AS ts, MAX(weight) AS weight,
        arg_max(event_type, weight) AS event_type
    FROM runs GROUP BY user_id, run
),
numbered AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY run DESC) AS from_end FROM collapsed),
kept AS (SELECT *, COUNT(*) OVER (PARTITION BY user_id) AS n FROM numbered WHERE from_end <= {MAX_LEN})
SELECT user_id, CAST(n - from_end + 1 AS INT) AS step, item_idx, event_type, weight, ts,
    CASE WHEN from_end <= LEAST({TEST}, n - 1) THEN 'test' WHEN from_end <= LEAST({TEST + VALID}, n - 1) THEN 'valid' ELSE 'train' END AS split
FROM kept""")
run("sequences", """
SELECT user_id, list(item_idx ORDER BY step) AS item_idxs, list(event_type ORDER BY step) AS event_types,
    list(weight ORDER BY step) AS weights, CAST(COUNT(*) AS INT) AS length,
    CAST(COUNT(*) FILTER (WHERE split = 'valid') AS INT) AS valid_steps,
    CAST(COUNT(*) FILTER (WHERE split = 'test') AS INT) AS test_steps, MAX(ts) AS last_ts
FROM steps GROUP BY user_id""")
run("interactions", """
SELECT e.user_id, i.item_idx, e.event_type, COUNT(*) AS events, MAX(e.ts) AS last_ts
FROM clean_events e JOIN item_index i ON e.item_id = i.item_id GROUP BY ALL""")
run("item_popularity", f"""
SELECT i.item_idx, i.item_id, i.category, COUNT(DISTINCT e.user_id) AS users, COUNT(*) AS events
FROM clean_events e JOIN item_index i ON e.item_id = i.item_id
WHERE e.ts >= TIMESTAMP '{pop_start}' AND e.event_type <> 'search' GROUP BY ALL""")
run("item_cooccurrence", f"""
WITH train AS (SELECT user_id, step, item_idx FROM steps WHERE split = 'train'),
ahead AS (SELECT t.user_id, t.item_idx, t.step + o.d AS next_step FROM train t CROSS JOIN range(1, {WINDOW} + 1) o(d)),
pairs AS (
    SELECT DISTINCT a.user_id, a.item_idx AS item_a, b.item_idx AS item_b
    FROM ahead a JOIN train b ON b.user_id = a.user_id AND b.step = a.next_step
    WHERE a.item_idx <> b.item_idx
),
both_ways AS (SELECT user_id, item_a, item_b FROM pairs UNION SELECT user_id, item_b, item_a FROM pairs)
SELECT item_a, item_b, COUNT(*) AS users FROM both_ways GROUP BY ALL""")
run("item_text", "SELECT item_idx, item_id, concat_ws(' . ', title, category, brand, description) AS text FROM item_index")

for t in ["clean_events", "quarantine", "steps", "sequences", "interactions", "item_popularity", "item_cooccurrence", "item_text"]:
    s = time.time()
    con.execute(f"COPY {t} TO '{out}/{t}.parquet' (FORMAT parquet, COMPRESSION zstd)")
    timings[f"write {t}"] = time.time() - s
rows = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ["events_checked", "clean_events", "quarantine", "steps", "sequences", "item_cooccurrence"]}
print({"seconds": round(time.time() - start_all, 2), "rows": rows})
