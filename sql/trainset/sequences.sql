-- Per user, the chronological item sequence (searches left out, repeats of
-- the same item in a row collapsed), capped to the most recent
-- $max_length steps. The last step is the test item, the one before it the
-- validation item; the model trains on the rest.
WITH ev AS (
    SELECT
        e.user_id, i.item_idx, e.event_type, e.ts,
        LAG(i.item_idx) OVER (PARTITION BY e.user_id ORDER BY e.ts, i.item_idx, e.event_type) AS prev_idx
    FROM clean_events e
    JOIN item_index i ON e.item_id = i.item_id
    WHERE e.event_type <> 'search'
),
steps AS (
    SELECT
        user_id, item_idx, event_type, ts,
        ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts DESC, item_idx DESC) AS from_end
    FROM ev
    WHERE prev_idx IS NULL OR prev_idx <> item_idx
)
SELECT
    user_id,
    array_agg(item_idx ORDER BY ts, item_idx) AS item_idxs,
    array_agg(event_type ORDER BY ts, item_idx) AS event_types,
    CAST(COUNT(*) AS INT) AS length
FROM steps
WHERE from_end <= $max_length
GROUP BY user_id
ORDER BY user_id
