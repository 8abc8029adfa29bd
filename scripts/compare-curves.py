#!/usr/bin/env python3
"""Compares two loss curves written by scripts/loss-curves.sh (step,loss CSV):
prints the mean and largest absolute difference, per window of steps, and the
mean loss of each curve over the last 50 steps."""
import csv
import sys


def load(path):
    with open(path) as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


a, b = load(sys.argv[1]), load(sys.argv[2])
steps = sorted(set(a) & set(b))
if not steps:
    sys.exit("no common steps")
print(f"{len(steps)} common steps; {sys.argv[1]} vs {sys.argv[2]}")
print("| steps | mean |a-b| | max |a-b| | mean a | mean b |")
print("|---|---:|---:|---:|---:|")
w = 50
for lo in range(steps[0], steps[-1] + 1, w):
    s = [x for x in steps if lo <= x < lo + w]
    if not s:
        continue
    d = [abs(a[x] - b[x]) for x in s]
    print(f"| {s[0]}-{s[-1]} | {sum(d)/len(d):.4f} | {max(d):.4f} | {sum(a[x] for x in s)/len(s):.4f} | "
          f"{sum(b[x] for x in s)/len(s):.4f} |")
