-- Trending in-stock items per category, for cold-start users and category
-- pages. An event counts its event weight, halved every $half_life_days
-- days before $end_seconds (the end of the run date, Unix seconds); events
-- since $start count. An item counts towards every level of its category
-- path ('Home', 'Home > Kitchen', 'Home > Kitchen > Pans') and towards
-- '(all)'. Top $k per category; ties rank by item_id.
WITH scored AS (
    SELECT e.item_id,
           SUM(w.weight * power(0.5, ($end_seconds - to_unixtime(e.ts)) / 86400.0 / $half_life_days)) AS score
    FROM clean_events e
    JOIN event_weights w ON e.event_type = w.event_type
    WHERE e.ts >= $start AND e.item_id IS NOT NULL
    GROUP BY e.item_id
),
stocked AS (
    SELECT s.item_id, s.score, i.category
    FROM scored s
    JOIN item_index i ON s.item_id = i.item_id
    WHERE i.in_stock AND s.score > 0
),
paths AS (
    SELECT item_id, score, string_to_array(category, ' > ') AS parts
    FROM stocked
    WHERE category IS NOT NULL AND trim(category) <> ''
),
levels AS (
    SELECT item_id, score, parts, unnest(generate_series(1, array_length(parts))) AS depth
    FROM paths
),
per_category AS (
    SELECT '(all)' AS category, item_id, score FROM stocked
    UNION ALL
    SELECT array_to_string(array_slice(parts, 1, depth), ' > ') AS category, item_id, score FROM levels
),
ranked AS (
    SELECT category, item_id, score,
           ROW_NUMBER() OVER (PARTITION BY category ORDER BY score DESC, item_id) AS rank
    FROM per_category
)
SELECT category, CAST(rank AS INT) AS rank, item_id, CAST(score AS FLOAT) AS score
FROM ranked
WHERE rank <= $k
ORDER BY category, rank
