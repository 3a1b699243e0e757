-- Each user's item sequence (candidates and segment summaries).
SELECT user_id, item_idxs FROM sequences
