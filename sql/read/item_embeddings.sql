-- The published model's item embeddings, by item (candidates).
SELECT item_idx, item_id, embedding FROM item_embeddings ORDER BY item_idx
