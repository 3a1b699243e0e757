-- Quarantined rows per input file and reason code, most frequent first.
SELECT source, reason, COUNT(*) AS n
FROM quarantine
GROUP BY source, reason
ORDER BY source, n DESC, reason
