-- Every raw event row, normalised, with the first row-level cleaning rule
-- it breaks (reason NULL = passes them). One output row per input row:
-- nothing is dropped. Rules in order: malformed (unparsable record or
-- number), missing_id, unknown_event_type, bad_timestamp, wrong_partition
-- (stamped outside the timestamps its file's dt= partition may hold),
-- out_of_window, unknown_item. The rules that compare rows (duplicate, then
-- bot) are applied by events_checked.sql, which reads this table several
-- times; it is written once so that the raw files are parsed once.
--
-- Tables:
--   input_files(source, ts_from, ts_to)  per event file, the timestamps its
--                                        partition may hold (NULL: no partition)
-- Parameters:
--   $window_start, $window_end  timestamps; events outside [start, end) are out_of_window
WITH norm AS (
    SELECT
        _source AS source,
        _position AS position,
        _malformed IS NOT NULL AS malformed,
        COALESCE(_malformed,
                 concat_ws('|', COALESCE(event_id, ''), COALESCE(user_id, ''), COALESCE(item_id, ''),
                           COALESCE(event_type, ''), COALESCE(ts, ''), COALESCE(session_id, ''),
                           COALESCE(query, ''), COALESCE(rating, ''), COALESCE(quantity, ''),
                           COALESCE(price, ''))) AS raw,
        NULLIF(TRIM(event_id), '') AS event_id,
        NULLIF(TRIM(user_id), '') AS user_id,
        NULLIF(TRIM(item_id), '') AS item_id,
        LOWER(TRIM(event_type)) AS event_type,
        CASE
            WHEN TRIM(ts) ~ '^-?[0-9]{1,15}$'
                THEN CAST(to_timestamp_millis(TRY_CAST(TRIM(ts) AS BIGINT)) AS TIMESTAMP)
            ELSE TRY_CAST(TRIM(ts) AS TIMESTAMP)
        END AS ts,
        CAST(f.ts_from AS TIMESTAMP) AS ts_from,
        CAST(f.ts_to AS TIMESTAMP) AS ts_to,
        NULLIF(TRIM(session_id), '') AS session_id,
        NULLIF(TRIM(query), '') AS query,
        TRY_CAST(NULLIF(TRIM(rating), '') AS DOUBLE) AS rating,
        TRY_CAST(NULLIF(TRIM(quantity), '') AS DOUBLE) AS quantity,
        TRY_CAST(NULLIF(TRIM(price), '') AS DOUBLE) AS price,
        -- A number column that holds something other than a number.
        (NULLIF(TRIM(rating), '') IS NOT NULL AND TRY_CAST(TRIM(rating) AS DOUBLE) IS NULL)
            OR (NULLIF(TRIM(quantity), '') IS NOT NULL AND TRY_CAST(TRIM(quantity) AS DOUBLE) IS NULL)
            OR (NULLIF(TRIM(price), '') IS NOT NULL AND TRY_CAST(TRIM(price) AS DOUBLE) IS NULL)
            AS bad_number
    -- The file list is the build side: the events stream through.
    FROM input_files f
    RIGHT JOIN raw_events ON f.source = raw_events._source
),
ruled AS (
    SELECT
        n.*,
        CASE
            WHEN n.malformed OR n.bad_number THEN 'malformed'
            WHEN n.user_id IS NULL THEN 'missing_id'
            WHEN n.item_id IS NULL AND n.event_type IS DISTINCT FROM 'search' THEN 'missing_id'
            WHEN n.event_type IS NULL
                OR n.event_type NOT IN ('view', 'click', 'add_to_cart', 'purchase', 'search', 'rating', 'review')
                THEN 'unknown_event_type'
            WHEN n.ts IS NULL THEN 'bad_timestamp'
            WHEN n.ts < n.ts_from OR n.ts >= n.ts_to THEN 'wrong_partition'
            WHEN n.ts < $window_start OR n.ts >= $window_end THEN 'out_of_window'
            WHEN n.item_id IS NOT NULL AND c.item_id IS NULL THEN 'unknown_item'
        END AS reason
    -- The catalog is written first so that it is the hash join's build
    -- side: the events stream through without being held in memory.
    FROM (SELECT DISTINCT item_id FROM items) c
    RIGHT JOIN norm n ON n.item_id = c.item_id
)
SELECT
    source, position, raw, event_id, user_id, item_id, event_type, ts, session_id, query,
    rating, quantity, price, reason
FROM ruled
