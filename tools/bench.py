#!/usr/bin/env python3
"""edgebone against ONNX Runtime on the same ONNX file and input, in one run.

Times inference alone (no decoding, no preprocessing): the median of --runs runs
after --warmup untimed ones, at 1 and 2 threads, and prints the ratios as a
Markdown table. Needs `pip install onnxruntime numpy` and a release build:

    cargo build --release -p edgebone-firmware
    python3 tools/bench.py
"""

import argparse
import json
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent
CASES = [
    # bundle, golden input tensor (raw little-endian f32)
    ("mobilenet_v2", "tests/data/golden/mobilenet_v2.input0.f32"),
    ("yolov5n", "tests/data/golden/yolov5n.bus.input.f32"),
]


def network(bundle):
    manifest = (ROOT / "models" / bundle / "manifest.toml").read_text()
    name = next(l.split("=")[1].strip().strip('"') for l in manifest.splitlines() if l.startswith("network"))
    return ROOT / "models" / bundle / name


def edgebone_median(binary, bundle, tensor, threads, runs, warmup):
    out = subprocess.run(
        [str(binary), "bench", "--model", str(ROOT / "models" / bundle), "--threads", str(threads),
         "--runs", str(runs), "--warmup", str(warmup), "--input", str(ROOT / tensor)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)["median_ms"]


def ort_median(bundle, tensor, threads, runs, warmup):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(network(bundle)), options, providers=["CPUExecutionProvider"])
    meta = session.get_inputs()[0]
    x = np.fromfile(ROOT / tensor, dtype="<f4").reshape(meta.shape)
    for _ in range(warmup):
        session.run(None, {meta.name: x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {meta.name: x})
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edgebone", default=ROOT / "target/release/edgebone", type=pathlib.Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if args.runs < 50:
        print("note: fewer than 50 runs per median", file=sys.stderr)
    if not args.edgebone.exists():
        sys.exit(f"{args.edgebone}: not built; run: cargo build --release -p edgebone-firmware")

    print(f"{platform.machine()}, {platform.processor() or 'cpu'}; onnxruntime {ort.__version__}; "
          f"median of {args.runs} runs after {args.warmup} warm-up runs, inference only\n")
    print("| model | threads | edgebone (ms) | ONNX Runtime (ms) | edgebone / ORT |")
    print("|---|---|---|---|---|")
    for bundle, tensor in CASES:
        for threads in args.threads:
            ours = edgebone_median(args.edgebone, bundle, tensor, threads, args.runs, args.warmup)
            theirs = ort_median(bundle, tensor, threads, args.runs, args.warmup)
            print(f"| {bundle} | {threads} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
