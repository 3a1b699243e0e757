-- The distribution of user_candidates.score for the report: $bins bins of
-- equal width between the lowest and the highest score (the highest falls
-- in the last bin), one row per bin that holds a candidate, with the range.
WITH bounds AS (
    SELECT MIN(score) AS lo, MAX(score) AS hi FROM user_candidates
),
binned AS (
    SELECT LEAST(
               CAST(FLOOR((CAST(c.score AS DOUBLE) - b.lo) / GREATEST(b.hi - b.lo, 1e-12) * $bins) AS BIGINT),
               $bins - 1
           ) AS bin
    FROM user_candidates c
    CROSS JOIN bounds b
)
SELECT x.bin, CAST(b.lo AS DOUBLE) AS lo, CAST(b.hi AS DOUBLE) AS hi, COUNT(*) AS candidates
FROM binned x
CROSS JOIN bounds b
GROUP BY x.bin, b.lo, b.hi
ORDER BY x.bin
