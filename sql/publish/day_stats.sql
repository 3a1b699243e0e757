-- Figures the day-over-day gate compares between published dates, one row:
-- catalog coverage (distinct recommended items / in-stock items), the share
-- of users whose list comes from cold start or popularity, the model's
-- NDCG@10 on the held-out split (NULL when not evaluated); for the
-- report's trend, its Recall@10, popularity's NDCG@10, and the novelty and
-- category diversity of the first 10 candidates (NULL when not evaluated).
WITH first_rows AS (
    SELECT user_id, source FROM user_candidates WHERE rank = 1
)
SELECT
    CAST((SELECT COUNT(DISTINCT item_id) FROM user_candidates) AS DOUBLE)
        / GREATEST((SELECT COUNT(*) FROM item_index WHERE in_stock), 1) AS coverage,
    CAST((SELECT COUNT(*) FROM first_rows WHERE source IN ('cold_start', 'popular')) AS DOUBLE)
        / GREATEST((SELECT COUNT(*) FROM first_rows), 1) AS cold_share,
    (SELECT MAX(value) FROM evaluation
     WHERE model = 'nightrec' AND segment = 'all' AND metric = 'ndcg' AND k = 10) AS ndcg,
    (SELECT COUNT(*) FROM first_rows) AS users,
    (SELECT MAX(value) FROM evaluation
     WHERE model = 'nightrec' AND segment = 'all' AND metric = 'recall' AND k = 10) AS recall,
    (SELECT MAX(value) FROM evaluation
     WHERE model = 'popularity' AND segment = 'all' AND metric = 'ndcg' AND k = 10) AS popularity_ndcg,
    (SELECT MAX(value) FROM evaluation
     WHERE model = 'nightrec' AND segment = 'published lists' AND metric = 'novelty' AND k = 10) AS novelty,
    (SELECT MAX(value) FROM evaluation
     WHERE model = 'nightrec' AND segment = 'published lists' AND metric = 'diversity' AND k = 10) AS diversity
