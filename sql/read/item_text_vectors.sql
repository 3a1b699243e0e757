-- Item text embeddings, by item (query candidates).
SELECT item_idx, embedding FROM item_text_embeddings ORDER BY item_idx
