-- Each user's steps with their validation and test counts, by user (training data).
SELECT user_id, item_idxs, valid_steps, test_steps FROM sequences ORDER BY user_id
