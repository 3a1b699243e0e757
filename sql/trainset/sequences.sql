-- Per user, the steps (table steps) as parallel lists, oldest first, with
-- how many of the last steps are held out for validation and test: the
-- model trains on the first length - valid_steps - test_steps items.
SELECT
    user_id,
    array_agg(item_idx ORDER BY step) AS item_idxs,
    array_agg(event_type ORDER BY step) AS event_types,
    array_agg(weight ORDER BY step) AS weights,
    CAST(COUNT(*) AS INT) AS length,
    CAST(COUNT(*) FILTER (WHERE split = 'valid') AS INT) AS valid_steps,
    CAST(COUNT(*) FILTER (WHERE split = 'test') AS INT) AS test_steps,
    MAX(ts) AS last_ts
FROM steps
GROUP BY user_id
ORDER BY user_id
