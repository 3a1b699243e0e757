-- The catalogue image embeddings as given (JSON text), by item (text stage).
SELECT item_idx, image_embedding FROM item_index ORDER BY item_idx
