#!/usr/bin/env python3
"""edgebone against ONNX Runtime on the same ONNX file and input, in one run.

Times inference alone (no decoding, no preprocessing): the median of --runs runs
after --warmup untimed ones, at 1 and 2 threads, and prints the ratios as a
Markdown table. Then the device loop end to end: `edgebone run` on a 30 fps
source (the test photos, decoded and paced like a camera) for --e2e-seconds,
with its capture-to-report latency percentiles and dropped frames.
Each float model is timed next to its int8 bundle (the same QDQ file for both
engines); the int8 ResNet-18 is made by `quantize int8` from the random-weight
bundle into a temporary folder rather than committed. A second table gives the
int8/float ratios.
Needs `pip install onnxruntime numpy` and a release build:

    cargo build --release -p edgebone-firmware -p edgebone-tools
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
    # float bundle, its int8 bundle (None: made by `quantize` here), golden input tensor (f32 LE)
    ("mobilenet_v2", "mobilenet_v2_int8", "tests/data/golden/mobilenet_v2.input0.f32"),
    ("resnet18_random", None, "tests/data/golden/mobilenet_v2.input0.f32"),
    ("yolov5n", "yolov5n_int8", "tests/data/golden/yolov5n.bus.input.f32"),
]


def network(bundle):
    manifest = (bundle / "manifest.toml").read_text()
    name = next(l.split("=")[1].strip().strip('"') for l in manifest.splitlines() if l.startswith("network"))
    return bundle / name


def make_int8(quantize, bundle, out):
    subprocess.run(
        [str(quantize), "int8", str(bundle), "--calib", str(ROOT / "tests/data/images/imagenet-calib"),
         "--out", str(out)],
        check=True, capture_output=True, text=True,
    )
    return out


def edgebone_median(binary, bundle, tensor, threads, runs, warmup):
    out = subprocess.run(
        [str(binary), "bench", "--model", str(bundle), "--threads", str(threads),
         "--runs", str(runs), "--warmup", str(warmup), "--input", str(ROOT / tensor)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)["median_ms"]


def ort_median(onnx_file, tensor, threads, runs, warmup):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
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
    parser.add_argument("--quantize", default=ROOT / "target/release/quantize", type=pathlib.Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--e2e-seconds", type=float, default=20, help="0 skips the end-to-end run")
    parser.add_argument("--ort-only", type=pathlib.Path, nargs="+",
                        help="only time ONNX Runtime on these ONNX files (1 thread) with --input")
    parser.add_argument("--input", default="tests/data/golden/mobilenet_v2.input0.f32")
    args = parser.parse_args()
    if args.ort_only:
        for onnx_file in args.ort_only:
            ms = ort_median(onnx_file, args.input, 1, args.runs, args.warmup)
            print(f"{onnx_file}: {ms:.2f} ms (ONNX Runtime {ort.__version__}, 1 thread)")
        return
    if args.runs < 50:
        print("note: fewer than 50 runs per median", file=sys.stderr)
    for binary in (args.edgebone, args.quantize):
        if not binary.exists():
            sys.exit(f"{binary}: not built; run: cargo build --release -p edgebone-firmware -p edgebone-tools")

    print(f"{platform.machine()}, {platform.processor() or 'cpu'}; onnxruntime {ort.__version__}; "
          f"median of {args.runs} runs after {args.warmup} warm-up runs, inference only\n")
    print("| model | threads | edgebone (ms) | ONNX Runtime (ms) | edgebone / ORT |")
    print("|---|---|---|---|---|")
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        for float_name, int8_name, tensor in CASES:
            float_bundle = ROOT / "models" / float_name
            int8_bundle = (ROOT / "models" / int8_name if int8_name
                           else make_int8(args.quantize, float_bundle, pathlib.Path(tmp) / f"{float_name}_int8"))
            for kind, bundle in (("float", float_bundle), ("int8", int8_bundle)):
                for threads in args.threads:
                    ours = edgebone_median(args.edgebone, bundle, tensor, threads, args.runs, args.warmup)
                    theirs = ort_median(network(bundle), tensor, threads, args.runs, args.warmup)
                    medians[float_name, kind, threads] = (ours, theirs)
                    print(f"| {float_name} {kind} | {threads} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f}x |",
                          flush=True)
    print("\nint8 against float (time ratio, < 1 is faster), and edgebone int8 against ONNX Runtime int8:\n")
    print("| model | threads | edgebone int8 / float | ORT int8 / float | edgebone int8 / ORT int8 |")
    print("|---|---|---|---|---|")
    for float_name, _, _ in CASES:
        for threads in args.threads:
            (f_ours, f_ort), (q_ours, q_ort) = (medians[float_name, k, threads] for k in ("float", "int8"))
            print(f"| {float_name} | {threads} | {q_ours / f_ours:.2f} | {q_ort / f_ort:.2f} | {q_ours / q_ort:.2f}x |")
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
