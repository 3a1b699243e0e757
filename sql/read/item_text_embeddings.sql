-- Item text embeddings with their ids, by item (training data).
SELECT item_idx, item_id, embedding FROM item_text_embeddings ORDER BY item_idx
