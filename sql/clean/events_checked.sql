-- Every raw event row (table events_ruled) with the first cleaning rule it
-- breaks (reason NULL = clean): the row-level reasons of events_ruled, then
-- duplicate for every later copy (by file, then position in the file) of a
-- row that passes them (same event_id; without one, the same user, item,
-- event type, timestamp and query), then bot for the rows of users whose
-- clean events exceed either limit.
--
-- Duplicates are found without sorting the log: a hash aggregate finds the
-- keys seen more than once (few), only their rows are numbered, and the
-- later copies are marked by a join whose build side is just those rows.
-- (Numbering every row with a window sorted the whole log, payload and
-- all: 20 of the 32 seconds of events_ruled at 10M events.)
--
-- Parameters:
--   $bot_per_minute, $bot_per_day  a user above either limit is a bot
WITH keyed AS (
    SELECT
        source, position,
        COALESCE(event_id, concat_ws('|', user_id, COALESCE(item_id, ''), event_type,
                                     CAST(ts AS VARCHAR), COALESCE(query, ''))) AS dedupe_key
    FROM events_ruled
    WHERE reason IS NULL
),
-- Keys seen more than once, by a 64-bit hash: the aggregate holds one
-- integer per distinct key, not the key. Rows whose hashes merely collide
-- are told apart by the key itself below.
repeated AS (
    SELECT hash(dedupe_key) AS key_hash FROM keyed GROUP BY hash(dedupe_key) HAVING COUNT(*) > 1
),
-- The rows of those keys, each with its place in the log as one string
-- that sorts like (source, position).
candidates AS (
    SELECT
        k.dedupe_key, k.source, k.position,
        k.source || chr(1) || lpad(CAST(k.position AS VARCHAR), 20, '0') AS place
    FROM repeated r
    JOIN keyed k ON hash(k.dedupe_key) = r.key_hash
),
firsts AS (
    SELECT dedupe_key, MIN(place) AS place FROM candidates GROUP BY dedupe_key
),
-- Every copy after the first of its key (an aggregate, not a window: a
-- window's sort could not get memory beside the aggregates at 2 GiB).
later AS (
    SELECT c.source, c.position
    FROM firsts f
    JOIN candidates c ON c.dedupe_key = f.dedupe_key
    WHERE c.place <> f.place
),
deduped AS (
    SELECT
        d.source, d.position, d.raw, d.event_id, d.user_id, d.item_id, d.event_type, d.ts,
        d.session_id, d.query, d.rating, d.quantity, d.price,
        COALESCE(d.reason, CASE WHEN l.position IS NOT NULL THEN 'duplicate' END) AS reason
    FROM later l
    RIGHT JOIN events_ruled d ON d.source = l.source AND d.position = l.position
),
per_minute AS (
    SELECT user_id, date_trunc('minute', ts) AS minute, COUNT(*) AS events
    FROM deduped
    WHERE reason IS NULL
    GROUP BY user_id, date_trunc('minute', ts)
),
-- Days from the minutes: one aggregation of the rows serves both limits.
per_day AS (
    SELECT user_id, date_trunc('day', minute) AS day, MAX(events) AS busiest_minute, SUM(events) AS events
    FROM per_minute
    GROUP BY user_id, date_trunc('day', minute)
),
bots AS (
    SELECT user_id
    FROM per_day
    GROUP BY user_id
    HAVING MAX(busiest_minute) > $bot_per_minute OR MAX(events) > $bot_per_day
)
SELECT
    d.source, d.position, d.raw, d.event_id, d.user_id, d.item_id, d.event_type, d.ts,
    d.session_id, d.query, d.rating, d.quantity, d.price,
    CASE WHEN d.reason IS NULL AND b.user_id IS NOT NULL THEN 'bot' ELSE d.reason END AS reason
-- The bot list is written first so that it is the hash join's build side.
FROM bots b
RIGHT JOIN deduped d ON d.user_id = b.user_id
