-- Per user, the steps (table steps) as parallel lists, oldest first, with
-- how many of the last steps are held out for validation and test: the
-- model trains on the first length - valid_steps - test_steps items.
--
-- The steps are gathered as one list of structs, sorted by step (the
-- struct's first field) and split into the lists: DataFusion 55's ordered
-- `array_agg(x ORDER BY step)` keeps a ScalarValue per element and took
-- over 10 minutes on 7.7M steps of 186k users, where this takes seconds.
WITH gathered AS (
    SELECT
        user_id,
        array_sort(array_agg(named_struct(
            'step', step, 'item_idx', item_idx, 'event_type', event_type, 'weight', weight
        ))) AS s,
        CAST(COUNT(*) AS INT) AS length,
        CAST(COUNT(*) FILTER (WHERE split = 'valid') AS INT) AS valid_steps,
        CAST(COUNT(*) FILTER (WHERE split = 'test') AS INT) AS test_steps,
        MAX(ts) AS last_ts
    FROM steps
    GROUP BY user_id
)
SELECT
    user_id,
    array_transform(s, x -> x['item_idx']) AS item_idxs,
    array_transform(s, x -> x['event_type']) AS event_types,
    array_transform(s, x -> x['weight']) AS weights,
    length, valid_steps, test_steps, last_ts
FROM gathered
ORDER BY user_id
