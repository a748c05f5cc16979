"""Turns `cargo bench` (criterion) output into a Markdown table: bench, median estimate, interval."""
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
rows = []
# Criterion prints "NAME  time: [lo est hi]", the name on its own line when it is long.
for match in re.finditer(r"^(\S[^\n]*?)\s*\n?\s+time:\s+\[([^\]]+)\]", text, re.M):
    name = match.group(1).strip()
    parts = match.group(2).split()
    if len(parts) == 6:
        lo, est, hi = f"{parts[0]} {parts[1]}", f"{parts[2]} {parts[3]}", f"{parts[4]} {parts[5]}"
        rows.append(f"| {name} | {est} | [{lo} – {hi}] |")
print("| bench | time per iteration | 95% confidence interval |")
print("|---|---|---|")
print("\n".join(rows))
