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

# ncnn's published 1-thread times (its benchmark/README.md: Raspberry Pi 4 at 1.8 GHz,
# Raspberry Pi 5 at 2.4 GHz), ms, for the models ncnn's benchmark has.
NCNN_PUBLISHED_MS = {
    "a72": {"mobilenet_v2": 93.5, "resnet18": 191.1, "resnet18_int8": 158.5},
    "a76": {"mobilenet_v2": 16.4, "resnet18": 29.7, "resnet18_int8": 36.4},
}


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


def edgebone_median(binary, bundle, tensor, threads, runs, warmup, family="native"):
    """Median ms and the kernels that ran (`EDGEBONE_KERNELS=family`)."""
    out = subprocess.run(
        [str(binary), "bench", "--model", str(bundle), "--threads", str(threads),
         "--runs", str(runs), "--warmup", str(warmup), "--input", str(ROOT / tensor)],
        check=True, capture_output=True, text=True, env={**os.environ, "EDGEBONE_KERNELS": family},
    )
    report = json.loads(out.stdout)
    return report["median_ms"], report["kernels"]


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


def cpu_flags():
    text = pathlib.Path("/proc/cpuinfo").read_text() if pathlib.Path("/proc/cpuinfo").exists() else ""
    line = next((l for l in text.splitlines() if l.startswith(("flags", "Features"))), "")
    return set(line.split(":", 1)[-1].split())


def default_families():
    """The CPU's own kernels, plus the lower x86 family when this CPU has a higher one."""
    return ["native", "avx2"] if "avx512f" in cpu_flags() else ["native"]


def ort_best_int8(float_onnx, tensor, out):
    """ONNX Runtime's fast x86 int8: quantize_static, per-channel int8 weights, uint8
    activations, QDQ. Calibrated on the timing input alone: this file is for timing,
    its accuracy is not what is measured."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    session = ort.InferenceSession(str(float_onnx), providers=["CPUExecutionProvider"])
    meta = session.get_inputs()[0]
    x = np.fromfile(ROOT / tensor, dtype="<f4").reshape(meta.shape)

    class Once(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{meta.name: x}, {meta.name: x * 0.9}])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(float_onnx), str(out), Once(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def print_armcount(results):
    """Instructions per inference under qemu (armcount's JSON results), edgebone against
    ncnn, and Pi times estimated by scaling ncnn's published 1-thread times."""
    res = {}
    for path in sorted(pathlib.Path(results).glob("*.json")):
        p = json.loads(path.read_text())
        if "insns" in p:
            res[p["engine"], p["model"], p["core"]] = p
    order = ["mobilenet_v2", "mobilenet_v2_int8", "resnet18", "resnet18_int8", "yolov5n", "yolov5n_int8"]
    models = sorted({m for _, m, _ in res}, key=lambda m: order.index(m) if m in order else len(order))

    def cell(engine, model, core):
        p = res.get((engine, model, core))
        if not p:
            return "–"
        mac = p["class"].get("simd_mac", 0) + p["class"].get("simd_dot", 0)
        return f"{p['insns'] / 1e6:,.0f} ({mac / 1e6:,.0f})"

    print(f"\nARM, instructions per inference in millions (SIMD multiply-accumulate and dot in brackets), "
          f"1 thread, counted under qemu ({results}):\n")
    print("| model | ncnn A72 | edgebone A72 | ncnn A76 | edgebone A76 |")
    print("|---|---:|---:|---:|---:|")
    for m in models:
        print(f"| {m} | {cell('ncnn', m, 'a72')} | {cell('edgebone', m, 'a72')} | "
              f"{cell('ncnn', m, 'a76')} | {cell('edgebone', m, 'a76')} |")
    print("\nEstimated Pi time: ncnn's published 1-thread ms × edgebone's instructions / ncnn's "
          "(IPC differences ignored):\n")
    print("| model | Pi 4 ncnn ms | Pi 4 edgebone est. ms | Pi 5 ncnn ms | Pi 5 edgebone est. ms |")
    print("|---|---:|---:|---:|---:|")
    for m in NCNN_PUBLISHED_MS["a72"]:
        row = [m]
        for core in ("a72", "a76"):
            n, e = res.get(("ncnn", m, core)), res.get(("edgebone", m, core))
            ms = NCNN_PUBLISHED_MS[core][m]
            row += [f"{ms}", f"{ms * e['insns'] / n['insns']:.1f}" if n and e else "–"]
        print("| " + " | ".join(row) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edgebone", default=ROOT / "target/release/edgebone", type=pathlib.Path)
    parser.add_argument("--quantize", default=ROOT / "target/release/quantize", type=pathlib.Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kernels", nargs="+", default=default_families(),
                        help="EDGEBONE_KERNELS families to time (default: native, and avx2 on AVX-512 CPUs)")
    parser.add_argument("--models", nargs="+", default=[c[0] for c in CASES])
    parser.add_argument("--e2e-seconds", type=float, default=20, help="0 skips the end-to-end run")
    parser.add_argument("--armcount", type=pathlib.Path,
                        help="also print the ARM instruction-count table from this armcount results folder")
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

    flags = cpu_flags()
    print(f"{platform.machine()}, {'AVX-512 VNNI' if 'avx512_vnni' in flags else 'AVX2+FMA' if 'avx2' in flags else 'cpu'}; "
          f"onnxruntime {ort.__version__}; median of {args.runs} runs after {args.warmup} warm-up runs, "
          f"inference only; ratios < 1 mean edgebone is faster\n")
    print("| model | threads | kernels | float ms | ORT float ms | float / ORT | int8 ms | ORT best int8 ms "
          "| int8 / ORT best | int8 / float |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for float_name, int8_name, tensor in (c for c in CASES if c[0] in args.models):
            float_bundle = ROOT / "models" / float_name
            int8_bundle = (ROOT / "models" / int8_name if int8_name
                           else make_int8(args.quantize, float_bundle, pathlib.Path(tmp) / f"{float_name}_int8"))
            best = ort_best_int8(network(float_bundle), tensor, pathlib.Path(tmp) / f"{float_name}_ort_best.onnx")
            for threads in args.threads:
                ort_float = ort_median(network(float_bundle), tensor, threads, args.runs, args.warmup)
                ort_int8 = ort_median(best, tensor, threads, args.runs, args.warmup)
                for family in args.kernels:
                    f_ms, kernels = edgebone_median(args.edgebone, float_bundle, tensor, threads, args.runs,
                                                    args.warmup, family)
                    q_ms, _ = edgebone_median(args.edgebone, int8_bundle, tensor, threads, args.runs,
                                              args.warmup, family)
                    print(f"| {float_name} | {threads} | {kernels} | {f_ms:.2f} | {ort_float:.2f} | "
                          f"{f_ms / ort_float:.2f} | {q_ms:.2f} | {ort_int8:.2f} | {q_ms / ort_int8:.2f} | "
                          f"{q_ms / f_ms:.2f} |", flush=True)
    if args.armcount:
        print_armcount(args.armcount)
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
