"""Turn bench/scale.sh's run summaries into bench/results/scale.md.

usage: scale_report.py OUT "S M L" "command"
Per size and night: every stage's wall time, CPU time, peak RSS and rows
(from nightrec's run summary), the whole process's wall/CPU/peak RSS
(/usr/bin/time), and the growth exponent of each stage's wall time and
RSS from the smallest to the largest size (time ~ events^exponent).
"""
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys

out, sizes, command = sys.argv[1], sys.argv[2].split(), sys.argv[3]
STAGE = re.compile(r"^(\w+)\s+(ran|skipped)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(.*)$")


def summary(path):
    stages, facts, current = {}, {}, None
    for line in open(path):
        m = STAGE.match(line.rstrip("\n"))
        if m:
            name, status, wall, cpu, rss, tables = m.groups()
            rows = sum(int(n) for n in re.findall(r"\((\d+)\)", tables))
            current = name
            stages[name] = {"ran": status == "ran", "wall": float(wall), "cpu": float(cpu), "rss": float(rss), "rows": rows}
        elif current and line.startswith(" ") and ":" in line:
            k, v = line.strip().split(":", 1)
            facts.setdefault(current, {})[k.strip()] = v.strip()
    return stages, facts


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0) / 1024 / 1024
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


runs = {}
for s in sizes:
    info = json.load(open(f"{out}/{s}/size.json"))
    for night in (1, 2):
        st, facts = summary(f"{out}/{s}/night{night}.summary")
        t = json.load(open(f"{out}/{s}/night{night}.time.json"))
        runs[(s, night)] = (info, st, facts, t)

print("# Scale benchmark: two nights per size\n")
print(f"- date: {datetime.date.today()}, commit {commit()}")
print(f"- machine: {machine()}; no GPU")
print(f"- command: `{command}` (bench/scale.sh; data from `nightrec gen --seed 1`, 31 days)")
print(f"- threads: {runs[(sizes[0], 1)][0]['threads']} (`run.threads`, every pool)\n")
print("Night 1: `run --date D` from scratch. Night 2: `run --date D+1` with one more day of data, warm-started.\n")
print("A stage's peak RSS is the process's resident high-water mark during that stage (reset when it starts),")
print("so it includes what earlier stages of the same process still hold; the whole process's peak is given per night.\n")
stages = ["clean", "trainset", "text", "train", "embed", "candidates", "evaluate", "publish"]
for (s, night), (info, st, facts, t) in runs.items():
    print(f"## {s} night {night}: {info['events']:,} events, {info['users']:,} users, {info['items']:,} items\n")
    # Each stage resets the kernel's high-water mark, which /usr/bin/time
    # reads too: the process's peak is the largest of the stages' peaks.
    peak = max([t["max_rss_kb"] / 1024] + [x["rss"] for x in st.values()])
    print(f"Whole process: wall {t['wall']:.0f} s, CPU {t['user'] + t['sys']:.0f} s, peak RSS {peak:.0f} MiB\n")
    print("| stage | ran | wall s | CPU s | CPU/wall | peak RSS MiB | rows written |")
    print("|---|---|---|---|---|---|---|")
    for name in stages:
        x = st.get(name)
        if x:
            ratio = x["cpu"] / x["wall"] if x["wall"] > 0 else 0
            print(f"| {name} | {'yes' if x['ran'] else 'skipped'} | {x['wall']:.1f} | {x['cpu']:.1f} | {ratio:.2f} | {x['rss']:.0f} | {x['rows']:,} |")
    keep = ["loss", "pretraining epochs", "fine-tuning epochs (best)", "texts encoded / from cache",
            "NDCG@10 nightrec / popularity / item-kNN", "test cases (users sampled / with a test step)"]
    notes = [f"{k}: {v}" for f in facts.values() for k, v in f.items() if any(k.startswith(p) for p in keep)]
    if notes:
        print("\n" + "; ".join(notes))
    print()

if len(sizes) > 1:
    lo, hi = sizes[0], sizes[-1]
    ratio = runs[(hi, 1)][0]["events"] / runs[(lo, 1)][0]["events"]
    print(f"## Growth from {lo} to {hi} ({ratio:.0f}x events)\n")
    print("Exponent e in time ~ events^e (1 = linear). Exact top-K grows with users x items (expected e = 2 here).\n")
    print("| stage | night | wall exponent | RSS exponent |")
    print("|---|---|---|---|")
    for night in (1, 2):
        a, b = runs[(lo, night)][1], runs[(hi, night)][1]
        for name in stages:
            if name in a and name in b and a[name]["ran"] and b[name]["ran"] and a[name]["wall"] > 0:
                e = math.log(max(b[name]["wall"], 1e-3) / max(a[name]["wall"], 1e-3)) / math.log(ratio)
                r = math.log(max(b[name]["rss"], 1) / max(a[name]["rss"], 1)) / math.log(ratio)
                print(f"| {name} | {night} | {e:.2f} | {r:.2f} |")
