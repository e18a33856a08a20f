#!/usr/bin/env python3
"""Two `edgebone classify` runs over the same photos, compared: top-1 agreement,
each run's top-1 accuracy when a labels.tsv (file, class_index) is given, and the
largest difference in the top-1 score.

    python3 tools/agree.py REFERENCE.ndjson OTHER.ndjson [--labels DIR/labels.tsv]

Used for the fp16 accuracy in docs/speed.md (f32 on x86 against fp16 under qemu
as a Cortex-A76). Standard library only.
"""
import argparse
import csv
import json
import os


def top1(path):
    out = {}
    with open(path) as f:
        for line in f:
            report = json.loads(line)
            if "top" in report:
                best = report["top"][0]
                out[os.path.basename(report["image"])] = (best["class"], best["score"])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reference")
    p.add_argument("other")
    p.add_argument("--labels")
    args = p.parse_args()
    ref, other = top1(args.reference), top1(args.other)
    common = sorted(set(ref) & set(other))
    if not common:
        raise SystemExit("no photo is in both runs")
    agree = sum(ref[k][0] == other[k][0] for k in common)
    print(f"photos {len(common)} (reference {len(ref)}, other {len(other)})")
    print(f"top-1 agreement {agree}/{len(common)} = {agree / len(common):.1%}")
    same = [k for k in common if ref[k][0] == other[k][0]]
    if same:
        worst = max(abs(ref[k][1] - other[k][1]) for k in same)
        print(f"largest top-1 score difference where they agree {worst:.4f}")
    if args.labels:
        with open(args.labels) as f:
            truth = {row["file"]: int(row["class_index"]) for row in csv.DictReader(f, delimiter="\t")}
        for name, run in (("reference", ref), ("other", other)):
            hits = sum(run[k][0] == truth[k] for k in common if k in truth)
            print(f"top-1 accuracy {name} {hits}/{len(common)} = {hits / len(common):.1%}")
    for k in common:
        if ref[k][0] != other[k][0]:
            print(f"differs: {k}: {ref[k][0]} ({ref[k][1]:.3f}) vs {other[k][0]} ({other[k][1]:.3f})")


if __name__ == "__main__":
    main()
