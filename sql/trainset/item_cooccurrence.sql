-- Item pairs that occur within $window steps of each other in users'
-- training steps (held-out steps never count), in both directions, with
-- the number of users who show the pair: the item-kNN baseline's input.
WITH train AS (
    SELECT user_id, step, item_idx FROM steps WHERE split = 'train'
),
offsets AS (
    SELECT unnest(range(1, $window + 1)) AS d
),
pairs AS (
    SELECT DISTINCT a.user_id, a.item_idx AS item_a, b.item_idx AS item_b
    FROM train a
    CROSS JOIN offsets o
    JOIN train b ON b.user_id = a.user_id AND b.step = a.step + o.d
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
