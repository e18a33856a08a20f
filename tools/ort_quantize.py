#!/usr/bin/env python3
"""A QDQ model made by another tool: ONNX Runtime's `quantize_static`, as a bundle.

edgebone must run int8 models it did not make. This writes the variant furthest
from what `quantize int8` makes by default: per-tensor (not per-channel) weights,
uint8 activations and *asymmetric* uint8 weights (zero points other than 0);
`--per-channel`, `--weights int8` and `--activations int8` make the others. The
shipped `tests/data/ort-qdq/mobilenet_v2_ort_u8` was made with:

    pip install onnxruntime onnx sympy pillow numpy
    python3 tools/ort_quantize.py models/mobilenet_v2 tests/data/ort-qdq/mobilenet_v2_ort_u8

Calibration: the first 32 photos (by name) of tests/data/images/imagenet-calib,
preprocessed like torchvision (shorter side 256 bilinear, centre crop 224,
ImageNet mean/std). Never the test photos.
"""

import argparse
import hashlib
import pathlib
import re
import tempfile

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(path):
    img = Image.open(path).convert("RGB")
    scale = 256 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
    left, top = (img.width - 224) // 2, (img.height - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = (np.asarray(img, dtype=np.float32) / 255 - MEAN) / STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


class Photos(CalibrationDataReader):
    def __init__(self, folder, count, input_name):
        paths = sorted(folder.glob("*.JPEG"))[:count]
        self.feeds = iter([{input_name: preprocess(p)} for p in paths])

    def get_next(self):
        return next(self.feeds, None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=pathlib.Path, help="a float bundle (MobileNetV2-style input)")
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--calib", type=pathlib.Path, default=ROOT / "tests/data/images/imagenet-calib")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--per-channel", action="store_true", help="weights per output channel")
    parser.add_argument("--weights", choices=["uint8", "int8"], default="uint8")
    parser.add_argument("--activations", choices=["uint8", "int8"], default="uint8")
    args = parser.parse_args()
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    manifest = (args.bundle / "manifest.toml").read_text()
    network = re.search(r'^network = "(.*)"', manifest, re.M).group(1)
    input_name = re.search(r'^\[input\]\nname = "(.*)"', manifest, re.M).group(1)
    args.out.mkdir(parents=True, exist_ok=True)
    out_name = args.out.name + ".onnx"
    with tempfile.TemporaryDirectory() as tmp:
        prepared = pathlib.Path(tmp) / "prepared.onnx"
        quant_pre_process(str(args.bundle / network), str(prepared))
        quantize_static(str(prepared), str(args.out / out_name), Photos(args.calib, args.count, input_name),
                        quant_format=QuantFormat.QDQ, per_channel=args.per_channel,
                        activation_type=types[args.activations], weight_type=types[args.weights])
    sha = hashlib.sha256((args.out / out_name).read_bytes()).hexdigest()
    manifest = re.sub(r'^network = ".*"', f'network = "{out_name}"', manifest, count=1, flags=re.M)
    manifest = re.sub(r'^sha256 = ".*"', f'sha256 = "{sha}"', manifest, count=1, flags=re.M)
    manifest = re.sub(r'^name = ".*"', f'name = "{args.out.name}"', manifest, count=1, flags=re.M)
    header = (f"# Made by ONNX Runtime's quantize_static (tools/ort_quantize.py): QDQ, "
              f"{'per-channel' if args.per_channel else 'per-tensor'} {args.weights} weights, "
              f"{args.activations} activations.\n")
    (args.out / "manifest.toml").write_text(header + manifest)
    labels = re.search(r'^labels = "(.*)"', manifest, re.M)
    if labels:
        (args.out / labels.group(1)).write_bytes((args.bundle / labels.group(1)).read_bytes())
    print(f"wrote {args.out} ({out_name}, sha256 {sha})")


if __name__ == "__main__":
    main()
