"""Runs a pruned export both ways and compares: ONNX Runtime on DIR/model.onnx and plain
PyTorch on DIR/model.py + DIR/model.safetensors, on the same random batch.

    python scripts/check_pruned_export.py pruned/macs-0.5

Prints the input shape and normalisation recorded in the ONNX metadata and the largest
difference between the two outputs relative to the output scale; exits with an error when
`onnx.checker` rejects the file or the difference exceeds 1e-4.
"""
import importlib.util
import json
import os
import sys

import numpy
import onnx
import onnxruntime
import torch


def main():
    export = sys.argv[1]
    path = os.path.join(export, "model.onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 4 for d in session.get_inputs()[0].shape]
    x = numpy.random.default_rng(0).standard_normal(shape).astype(numpy.float32)
    y_onnx = session.run(None, {session.get_inputs()[0].name: x})[0]

    spec = importlib.util.spec_from_file_location("pruned_model", os.path.join(export, "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.load(os.path.join(export, "model.safetensors"))
    with torch.no_grad():
        y_torch = net(torch.from_numpy(x)).numpy()
    diff = float(numpy.abs(y_onnx - y_torch).max()) / max(float(numpy.abs(y_torch).max()), 1e-12)
    print(json.dumps({
        "input": shape[1:],
        "mean": json.loads(meta.get("fair_pruner.mean", "null")),
        "std": json.loads(meta.get("fair_pruner.std", "null")),
        "onnxruntime_vs_pytorch": diff,
    }))
    if diff > 1e-4:
        sys.exit(f"ONNX Runtime and PyTorch differ by {diff:.2e} of the output scale")


if __name__ == "__main__":
    main()
