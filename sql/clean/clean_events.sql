-- Clean events, with session_id derived by an inactivity gap where the
-- input has none. Parameter: $session_gap_seconds.
WITH clean AS (
    SELECT *
    FROM events_checked
    WHERE reason IS NULL
),
gaps AS (
    SELECT
        clean.*,
        CASE
            WHEN LAG(ts) OVER (PARTITION BY user_id ORDER BY ts, source, position) IS NULL THEN 1
            WHEN to_unixtime(ts)
                - to_unixtime(LAG(ts) OVER (PARTITION BY user_id ORDER BY ts, source, position))
                > $session_gap_seconds THEN 1
            ELSE 0
        END AS starts_session
    FROM clean
)
SELECT
    event_id, user_id, item_id, event_type, ts,
    COALESCE(
        session_id,
        user_id || '#' || CAST(SUM(starts_session) OVER (
            PARTITION BY user_id ORDER BY ts, source, position
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS VARCHAR)
    ) AS session_id,
    query, rating, quantity, price
FROM gaps
