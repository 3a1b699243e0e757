-- Every user of the users table (candidates: cold-start users).
SELECT DISTINCT user_id FROM users
