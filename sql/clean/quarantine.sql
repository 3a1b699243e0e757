-- Every rejected input row with where it came from and why.
SELECT 'events' AS dataset, source, position, reason, raw FROM events_checked WHERE reason IS NOT NULL
UNION ALL
SELECT 'items' AS dataset, source, position, reason, raw FROM items_checked WHERE reason IS NOT NULL
UNION ALL
SELECT 'users' AS dataset, source, position, reason, raw FROM users_checked WHERE reason IS NOT NULL
