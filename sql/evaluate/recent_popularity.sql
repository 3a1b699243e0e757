-- The recent-popularity baseline of the offline evaluation: the trending
-- score of sql/candidates/popular_items.sql (an event counts its event
-- weight, halved every $half_life_days days before $end_seconds; steps
-- since $start count), on the steps the evaluation does not hold out, so
-- that no held-out item counts for itself. One row per item with a step
-- in the window.
SELECT item_idx,
       -- Summed as integers of 10^-6 (order-free, so a rerun gives the same scores).
       CAST(SUM(CAST(ROUND(weight * power(0.5, ($end_seconds - to_unixtime(ts)) / 86400.0 / $half_life_days) * 1e6)
                     AS BIGINT)) AS DOUBLE) / 1e6 AS score
FROM steps
WHERE split <> 'test' AND ts >= $start
GROUP BY item_idx
ORDER BY item_idx
