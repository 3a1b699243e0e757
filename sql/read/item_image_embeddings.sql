-- The image embeddings the text stage kept (training data).
SELECT item_idx, embedding FROM item_image_embeddings
