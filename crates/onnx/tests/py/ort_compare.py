"""Checks a model that fair-onnx wrote against the ONNX file it was imported from.

    python ort_compare.py ORIGINAL.onnx REWRITTEN.onnx [SEED]

Runs onnx.checker (full check, with shape inference) on REWRITTEN, then ONNX Runtime on both
files with the same seeded random input, and prints one JSON line:
{"checker": "ok", "max_abs_diff": ..., "scale": ..., "shape": [...]}. The input's batch size
is the original's when it is fixed, else 2.
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main():
    original, rewritten = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    onnx.checker.check_model(onnx.load(rewritten), full_check=True)
    a, b = session(original), session(rewritten)
    (inp,) = a.get_inputs()
    shape = [d if isinstance(d, int) else 2 for d in inp.shape]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    ya = a.run(None, {inp.name: x})[0]
    yb = b.run(None, {b.get_inputs()[0].name: x})[0]
    if ya.shape != yb.shape:
        raise SystemExit(f"output shapes differ: {ya.shape} vs {yb.shape}")
    print(json.dumps({
        "checker": "ok",
        "max_abs_diff": float(np.abs(ya - yb).max()),
        "scale": float(np.abs(ya).max()),
        "shape": list(ya.shape),
    }))


if __name__ == "__main__":
    main()
