-- Item pairs and the users who had both (item-kNN of the evaluation).
SELECT item_a, item_b, users FROM item_cooccurrence
