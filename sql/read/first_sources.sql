-- The source of each user's first candidate (evaluation: served by the model or a fallback).
SELECT user_id, source FROM user_candidates WHERE rank = 1
