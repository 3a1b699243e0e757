-- The users' embeddings, by user (candidates).
SELECT user_id, embedding FROM user_embeddings ORDER BY user_id
