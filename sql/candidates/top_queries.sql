-- The most frequent search queries since $start (trimmed, lower-cased),
-- those searched at least $min_count times; at most $limit, most searched
-- first, ties by query text.
SELECT lower(trim(query)) AS query,
       COUNT(*) AS searches,
       COUNT(DISTINCT user_id) AS users
FROM clean_events
WHERE event_type = 'search' AND ts >= $start AND query IS NOT NULL AND trim(query) <> ''
GROUP BY lower(trim(query))
HAVING COUNT(*) >= $min_count
ORDER BY searches DESC, query
LIMIT $limit
