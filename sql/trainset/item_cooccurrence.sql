-- Item pairs that occur within $window steps of each other in users'
-- training steps (held-out steps never count), in both directions, with
-- the number of users who show the pair: the item-kNN baseline's input.
--
-- Shaped for memory and speed at tens of millions of steps:
-- * users are numbered first, so the pair join is on two integers rather
--   than (string, integer), which keeps its in-memory build side small;
-- * the steps each item looks ahead to are unnested before the join, so
--   that it is a plain equi-join on (user, step): written as
--   `train a CROSS JOIN offsets o JOIN train b ON ... b.step = a.step + o.d`,
--   DataFusion 55 returned 4.3x too many pairs on MovieLens-100k (checked
--   against DuckDB; the class of bug of apache/datafusion#4844);
-- * each user's pairs are deduplicated unordered (lo, hi) and counted once,
--   and only the counts are mirrored (by unnest, not a cross join, whose
--   build side would be held in memory), which halves the aggregations;
--   they and the sort spill to runtime.spill_dir when the pool is full.
WITH users AS (
    SELECT user_id, ROW_NUMBER() OVER (ORDER BY user_id) AS u
    FROM (SELECT DISTINCT user_id FROM steps WHERE split = 'train')
),
train AS (
    SELECT u.u, s.step, s.item_idx
    FROM users u
    JOIN steps s ON s.user_id = u.user_id
    WHERE s.split = 'train'
),
ahead AS (
    SELECT u, item_idx, unnest(range(step + 1, step + $window + 1)) AS next_step
    FROM train
),
pairs AS (
    SELECT DISTINCT
        a.u,
        LEAST(a.item_idx, b.item_idx) AS lo,
        GREATEST(a.item_idx, b.item_idx) AS hi
    -- The training steps are the hash join's build side: the window's
    -- look-ahead rows (window times as many) stream through.
    FROM train b
    JOIN ahead a ON b.u = a.u AND b.step = a.next_step
    WHERE a.item_idx <> b.item_idx
),
counted AS (
    SELECT lo, hi, COUNT(*) AS users FROM pairs GROUP BY lo, hi
)
SELECT
    unnest(make_array(lo, hi)) AS item_a,
    unnest(make_array(hi, lo)) AS item_b,
    users
FROM counted
ORDER BY item_a, users DESC, item_b
