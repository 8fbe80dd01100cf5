"""Exports torchvision classification models (weights=None, seeded, with randomised
BatchNorm statistics) with both torch.onnx exporters, for fair-onnx's reference test.

    python export_torchvision.py OUTDIR SIZE NAME [NAME ...]

Writes OUTDIR/<name>-ts.onnx (TorchScript exporter, opset 17, BatchNorm folded) and
OUTDIR/<name>-dynamo.onnx (+ .onnx.data: dynamo exporter, opset 18, weights as external
data), each for a 1x3xSIZExSIZE input, and prints one line per file.
"""

import os
import sys
import time
import warnings

import torch
import torchvision

warnings.filterwarnings("ignore")


def main():
    out, size, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    torch.set_num_threads(2)
    for name in names:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n.endswith("running_mean"):
                    b.copy_(torch.randn(b.shape, generator=g) * 0.1)
                elif n.endswith("running_var"):
                    b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            for n, p in model.named_parameters():
                if n.endswith("bias"):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
                elif n.endswith("layer_scale"):
                    # ConvNeXt's 1e-6 would hide the blocks: scales of order 1 make them count.
                    p.copy_(torch.rand(p.shape, generator=g) + 0.5)
        x = torch.randn(1, 3, size, size)
        t = time.time()
        torch.onnx.export(model, (x,), os.path.join(out, f"{name}-ts.onnx"), dynamo=False, opset_version=17)
        print(f"{name}-ts.onnx {time.time() - t:.1f}s", flush=True)
        t = time.time()
        torch.onnx.export(model, (x,), os.path.join(out, f"{name}-dynamo.onnx"), dynamo=True, opset_version=18)
        print(f"{name}-dynamo.onnx {time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
