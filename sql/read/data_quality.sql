-- The data-quality checks (report).
SELECT * FROM data_quality
