#!/usr/bin/env python3
"""edgebone against ONNX Runtime on the same ONNX file and input, in one run.

Times inference alone (no decoding, no preprocessing): the median of --runs runs
after --warmup untimed ones, at 1 and 2 threads, and prints the ratios as a
Markdown table. Then the device loop end to end: `edgebone run` on a 30 fps
source (the test photos, decoded and paced like a camera) for --e2e-seconds,
with its capture-to-report latency percentiles and dropped frames.
Needs `pip install onnxruntime numpy` and a release build:

    cargo build --release -p edgebone-firmware
    python3 tools/bench.py
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
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


def run_e2e(binary, bundle, threads, seconds, fps=30):
    """`edgebone run` on a paced folder source; returns its exit summary."""
    with tempfile.TemporaryDirectory() as tmp:
        config = pathlib.Path(tmp) / "edgebone.toml"
        config.write_text(
            f'[model]\nbundle = "{ROOT / "models" / bundle}"\nthreads = {threads}\n'
            f'[source]\nkind = "folder"\npath = "{ROOT / "tests/data/images/imagenet-test"}"\n'
            f'fps = {fps}\nrepeat = true\n[stdout]\nenabled = false\n[stats]\ninterval_s = {seconds}\n'
        )
        proc = subprocess.Popen([str(binary), "run", "--config", str(config)],
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "RUST_LOG": "info"})
        time.sleep(seconds)
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    line = next(l for l in stderr.splitlines() if "summary " in l)
    return json.loads(line.split("summary ", 1)[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edgebone", default=ROOT / "target/release/edgebone", type=pathlib.Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--e2e-seconds", type=float, default=20, help="0 skips the end-to-end run")
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
    if args.e2e_seconds > 0:
        print(f"\n`edgebone run`, MobileNetV2, 30 fps source, {args.e2e_seconds:g} s, capture to report:\n")
        print("| threads | captured | processed fps | dropped | p50 (ms) | p90 (ms) | p99 (ms) |")
        print("|---|---|---|---|---|---|---|")
        for threads in args.threads:
            s = run_e2e(args.edgebone, "mobilenet_v2", threads, args.e2e_seconds)
            lat = s["latency_ms"]
            print(f"| {threads} | {s['captured']} | {s['fps']:.1f} | {s['dropped']} | "
                  f"{lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
