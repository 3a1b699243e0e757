-- Day-over-day stability of user_candidates against previous_candidates
-- (the latest earlier published date), one row: users in both, and the
-- mean share of a user's items today that were in their list before.
--
-- Aggregates only (no join of the two lists, which would hold one of them
-- in a hash table): each (user, item) pair is tagged with the days it
-- appears on, so the query spills instead of failing at any size.
WITH tagged AS (
    SELECT user_id, item_id, 1 AS cur, 0 AS prev FROM user_candidates
    UNION ALL
    SELECT user_id, item_id, 0 AS cur, 1 AS prev FROM previous_candidates
),
pairs AS (
    SELECT user_id, MAX(cur) AS cur, MAX(prev) AS prev
    FROM tagged
    GROUP BY user_id, item_id
),
per_user AS (
    SELECT user_id,
           SUM(cur) AS items,
           SUM(cur * prev) AS kept,
           MAX(prev) AS listed_before
    FROM pairs
    GROUP BY user_id
)
SELECT COUNT(*) AS users, COALESCE(AVG(CAST(kept AS DOUBLE) / items), 1.0) AS overlap
FROM per_user
WHERE items > 0 AND listed_before = 1
