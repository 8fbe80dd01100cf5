"""Checks an exported adaptive average pooling against PyTorch.

    python adaptive_pool_check.py MODEL.onnx OH OW

Runs ONNX Runtime on MODEL.onnx (input [N, C, H, W]) with a seeded input and compares with
torch.nn.functional.adaptive_avg_pool2d(x, (OH, OW)); prints JSON with the largest absolute
difference and the checker's verdict.
"""
import json
import sys

import numpy
import onnx
import onnxruntime
import torch


def main():
    path, oh, ow = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 2 for d in session.get_inputs()[0].shape]
    x = numpy.random.default_rng(0).standard_normal(shape).astype(numpy.float32)
    y = session.run(None, {session.get_inputs()[0].name: x})[0]
    want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), (oh, ow)).numpy()
    print(json.dumps({"checker": "ok", "shape": list(y.shape), "want": list(want.shape),
                      "max_abs_diff": float(numpy.abs(y - want).max()) if y.shape == want.shape else None}))


if __name__ == "__main__":
    main()
