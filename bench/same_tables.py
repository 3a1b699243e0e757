"""Whether two output roots published the same tables for a date: every
table the manifests list, compared by content with DuckDB (rows EXCEPT ALL
both ways, and row counts), not by the files' bytes (the publication id,
run id and lineage differ between runs). Exits 1 when any table differs.

usage: same_tables.py <output root A> <output root B> <date>
"""

import json
import sys

import duckdb

a_root, b_root, date = sys.argv[1:4]


def manifest(root):
    with open(f"{root}/_runs/dt={date}/manifest.json") as f:
        return {t["name"]: [f"{root}/{x['path']}" for x in t["files"]] for t in json.load(f)["tables"]}


a, b = manifest(a_root), manifest(b_root)
con = duckdb.connect()
differ = 0
for name in sorted(set(a) | set(b)):
    if name not in a or name not in b:
        print(f"{name}: only in {'A' if name in a else 'B'}")
        differ += 1
        continue
    if not a[name] and not b[name]:
        print(f"{name}: empty in both")
        continue
    if not a[name] or not b[name]:
        print(f"{name}: empty in {'A' if not a[name] else 'B'} only")
        differ += 1
        continue
    ra = con.execute("SELECT COUNT(*) FROM read_parquet(?)", [a[name]]).fetchone()[0]
    rb = con.execute("SELECT COUNT(*) FROM read_parquet(?)", [b[name]]).fetchone()[0]
    only = [
        con.execute(
            "SELECT COUNT(*) FROM (SELECT * FROM read_parquet(?) EXCEPT ALL SELECT * FROM read_parquet(?))", [x, y]
        ).fetchone()[0]
        for x, y in ((a[name], b[name]), (b[name], a[name]))
    ]
    same = ra == rb and only == [0, 0]
    differ += not same
    print(f"{name}: {'identical' if same else 'DIFFERENT'} ({ra} vs {rb} rows; {only[0]} only in A, {only[1]} only in B)")
sys.exit(1 if differ else 0)
