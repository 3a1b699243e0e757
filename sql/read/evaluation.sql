-- The evaluation rows (report).
SELECT * FROM evaluation
