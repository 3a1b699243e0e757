-- Beyond-accuracy figures of tomorrow's lists (user_candidates), long
-- format: one row per (metric, k) with `users` (users with a list), and
-- the mean as `sum` / `n` (with `sum_sq` for its confidence interval,
-- NULL where the figure is not a mean over users). At each cut-off k of
-- 10, 20 and 50 (a user's first k candidates):
--   coverage: distinct listed items (sum) / in-stock catalog items (n);
--   novelty: per user, the mean self-information -log2(p) of the listed
--     items, p = (users who interacted with the item + 1) / (users + 1),
--     counted in `interactions` (+1 keeps unseen items finite); in bits;
--   diversity: per user with at least two listed items, the share of
--     pairs of them in different categories (the category path cut at
--     $category_level levels; items without a category share one).
-- At k = 0 (the whole list): cold_start_users and popular_users, the
-- share of users whose first candidate has that source.
-- Aggregates only (the join builds on the catalog), so it spills instead
-- of failing at any size. Sums of fractions are summed as integers of
-- 10^-9 units: integer sums do not depend on the order partitions merge
-- in, so a rerun writes the same figures.
WITH seen AS (
    SELECT item_idx, user_id FROM interactions GROUP BY item_idx, user_id
),
item_users AS (
    SELECT item_idx, COUNT(*) AS users FROM seen GROUP BY item_idx
),
all_users AS (
    SELECT COUNT(*) AS n FROM (SELECT user_id FROM interactions GROUP BY user_id)
),
items AS (
    SELECT i.item_id,
           CAST(ROUND(-log2((COALESCE(u.users, 0) + 1.0) / ((SELECT n FROM all_users) + 1.0)) * 1e9) AS BIGINT)
               AS info,
           COALESCE(category_at(i.category, CAST($category_level AS BIGINT)), '')
               AS category
    FROM item_index i
    LEFT JOIN item_users u ON u.item_idx = i.item_idx
),
listed AS (
    SELECT c.user_id, c.rank, c.item_id, it.info, it.category
    FROM items it
    JOIN user_candidates c ON c.item_id = it.item_id
    WHERE c.rank <= 50
),
cutoffs AS (
    SELECT column1 AS k FROM (VALUES (10), (20), (50))
),
per_category AS (
    SELECT user_id, category,
           COUNT(*) FILTER (WHERE rank <= 10) AS n10,
           COUNT(*) FILTER (WHERE rank <= 20) AS n20,
           COUNT(*) AS n50,
           COALESCE(SUM(info) FILTER (WHERE rank <= 10), 0) AS info10,
           COALESCE(SUM(info) FILTER (WHERE rank <= 20), 0) AS info20,
           SUM(info) AS info50
    FROM listed
    GROUP BY user_id, category
),
per_user AS (
    SELECT user_id,
           SUM(n10) AS n10, SUM(n20) AS n20, SUM(n50) AS n50,
           SUM(n10 * (n10 - 1)) AS same10, SUM(n20 * (n20 - 1)) AS same20, SUM(n50 * (n50 - 1)) AS same50,
           SUM(info10) AS info10, SUM(info20) AS info20, SUM(info50) AS info50
    FROM per_category
    GROUP BY user_id
),
per_user_k AS (
    SELECT k.k,
           CAST(CASE k.k WHEN 10 THEN p.n10 WHEN 20 THEN p.n20 ELSE p.n50 END AS DOUBLE) AS n,
           CAST(CASE k.k WHEN 10 THEN p.same10 WHEN 20 THEN p.same20 ELSE p.same50 END AS DOUBLE) AS same,
           CAST(CASE k.k WHEN 10 THEN p.info10 WHEN 20 THEN p.info20 ELSE p.info50 END AS DOUBLE) / 1e9 AS info
    FROM per_user p
    CROSS JOIN cutoffs k
),
best AS (
    SELECT item_id, MIN(rank) AS best FROM listed GROUP BY item_id
),
coverage AS (
    SELECT k.k, COUNT(b.item_id) AS listed
    FROM cutoffs k
    LEFT JOIN best b ON b.best <= k.k
    GROUP BY k.k
),
in_stock AS (
    SELECT GREATEST(COUNT(*), 1) AS n FROM item_index WHERE in_stock
),
firsts AS (
    SELECT source FROM user_candidates WHERE rank = 1
),
list_users AS (
    SELECT COUNT(*) AS n FROM firsts
)
SELECT 'coverage' AS metric, c.k, u.n AS users, s.n AS n,
       CAST(c.listed AS DOUBLE) AS sum, CAST(NULL AS DOUBLE) AS sum_sq
FROM coverage c
CROSS JOIN list_users u
CROSS JOIN in_stock s
UNION ALL
SELECT 'novelty' AS metric, k, COUNT(*) AS users, COUNT(*) AS n,
       CAST(SUM(CAST(ROUND(info / n * 1e9) AS BIGINT)) AS DOUBLE) / 1e9 AS sum,
       CAST(SUM(CAST(ROUND((info / n) * (info / n) * 1e9) AS BIGINT)) AS DOUBLE) / 1e9 AS sum_sq
FROM per_user_k
WHERE n > 0
GROUP BY k
UNION ALL
SELECT 'diversity' AS metric, k, COUNT(*) AS users,
       COUNT(*) FILTER (WHERE n >= 2) AS n,
       CAST(COALESCE(SUM(CAST(ROUND((1.0 - same / GREATEST(n * (n - 1), 1.0)) * 1e9) AS BIGINT)) FILTER (WHERE n >= 2), 0)
           AS DOUBLE) / 1e9 AS sum,
       CAST(COALESCE(SUM(CAST(ROUND(POWER(1.0 - same / GREATEST(n * (n - 1), 1.0), 2) * 1e9) AS BIGINT)) FILTER (WHERE n >= 2), 0)
           AS DOUBLE) / 1e9 AS sum_sq
FROM per_user_k
WHERE n > 0
GROUP BY k
UNION ALL
SELECT 'cold_start_users' AS metric, 0 AS k, COUNT(*) AS users, COUNT(*) AS n,
       CAST(COUNT(*) FILTER (WHERE source = 'cold_start') AS DOUBLE) AS sum,
       CAST(COUNT(*) FILTER (WHERE source = 'cold_start') AS DOUBLE) AS sum_sq
FROM firsts
UNION ALL
SELECT 'popular_users' AS metric, 0 AS k, COUNT(*) AS users, COUNT(*) AS n,
       CAST(COUNT(*) FILTER (WHERE source = 'popular') AS DOUBLE) AS sum,
       CAST(COUNT(*) FILTER (WHERE source = 'popular') AS DOUBLE) AS sum_sq
FROM firsts
ORDER BY metric, k
