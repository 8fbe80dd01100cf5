"""Writes a small PyTorch CNN as ONNX: the starting point of the README's walk-through
"Prune your own PyTorch model".

    python scripts/export_example_cnn.py model.onnx

The network takes Fashion-MNIST-sized images (1x28x28) and has what real models have:
convolutions with BatchNorm, a residual connection, a squeeze-and-excitation gate,
Hardswish, max pooling, global average pooling and a linear classifier. Its weights are
random (seeded): replace `SmallCnn()` by your trained model and the example input by one of
your model's inputs. `torch.onnx.export` is called as a user would: eval mode, opset 17,
the TorchScript-based exporter (`dynamo=True` works as well).
"""
import sys

import torch
import torch.nn as nn


class SmallCnn(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.pool = nn.MaxPool2d(2)
        self.expand = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.Hardswish())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, 8, 1), nn.ReLU(), nn.Conv2d(8, 32, 1),
                                nn.Hardsigmoid())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = self.expand(self.pool(x))
        x = x * self.se(x)
        return self.head(x)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "model.onnx"
    torch.manual_seed(0)
    model = SmallCnn().eval()
    x = torch.randn(1, 1, 28, 28)
    torch.onnx.export(model, (x,), out, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
