-- Day-over-day stability of user_candidates against previous_candidates
-- (the latest earlier published date): per user in both, the share of
-- today's items that were in their list before, as a histogram of ten
-- buckets (bucket b holds shares in [b/10, (b+1)/10); bucket 10 is a list
-- kept whole) with the users and the sum of their shares, so the gate's
-- mean share is sum(overlap_sum) / sum(users) and the report draws the
-- distribution from the same rows.
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
           CAST(SUM(cur * prev) AS DOUBLE) / SUM(cur) AS share
    FROM pairs
    GROUP BY user_id
    HAVING SUM(cur) > 0 AND MAX(prev) = 1
)
SELECT CAST(LEAST(FLOOR(share * 10), 10) AS INT) AS bucket,
       COUNT(*) AS users,
       SUM(share) AS overlap_sum
FROM per_user
GROUP BY 1
ORDER BY 1
