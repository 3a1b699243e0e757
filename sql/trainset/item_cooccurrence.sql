-- Item pairs that occur within $window steps of each other in users'
-- training steps (held-out steps never count), in both directions, with
-- the number of users who show the pair: the item-kNN baseline's input.
-- The step each item looks ahead to is computed first, so that the pair
-- join is a plain equi-join on (user_id, step): written as
-- `train a CROSS JOIN offsets o JOIN train b ON ... b.step = a.step + o.d`,
-- DataFusion 55 returned 4.3x too many pairs on MovieLens-100k (checked
-- against DuckDB; the class of bug of apache/datafusion#4844).
WITH train AS (
    SELECT user_id, step, item_idx FROM steps WHERE split = 'train'
),
ahead AS (
    SELECT t.user_id, t.item_idx, t.step + o.d AS next_step
    FROM train t
    CROSS JOIN (SELECT unnest(range(1, $window + 1)) AS d) o
),
pairs AS (
    SELECT DISTINCT a.user_id, a.item_idx AS item_a, b.item_idx AS item_b
    FROM ahead a
    JOIN train b ON b.user_id = a.user_id AND b.step = a.next_step
    WHERE a.item_idx <> b.item_idx
),
both_ways AS (
    SELECT user_id, item_a, item_b FROM pairs
    UNION
    SELECT user_id, item_b AS item_a, item_a AS item_b FROM pairs
)
SELECT item_a, item_b, COUNT(*) AS users
FROM both_ways
GROUP BY item_a, item_b
ORDER BY item_a, users DESC, item_b
