"""Writes a small torchvision vision transformer as ONNX: the starting point of the README's
walk-through "Prune a vision transformer".

    python scripts/export_example_vit.py vit.onnx [--dynamo]

The network is torchvision's own `VisionTransformer` class (the class behind `vit_b_16`),
sized for Fashion-MNIST: 28x28 images cut into 7x7 patches (16 tokens and a class token),
2 encoder blocks of width 32 with 4 attention heads of 8 and an MLP of 64, a linear head
for 10 classes. Its patch embedding reads one channel instead of three (Fashion-MNIST is
grey). Its weights are random (seeded): put your trained model in its place.
`torch.onnx.export` is called as a user would: eval mode, a dynamic batch axis, and the
TorchScript-based exporter at opset 17, or with `--dynamo` the dynamo-based one at opset 18.
The example input holds 2 images: dynamo fixes an axis whose example size is 1 to 1.
"""
import sys

import torch
import torch.nn as nn
from torchvision.models.vision_transformer import VisionTransformer


def small_vit(classes=10):
    model = VisionTransformer(image_size=28, patch_size=7, num_layers=2, num_heads=4,
                              hidden_dim=32, mlp_dim=64, num_classes=classes)
    # Grey images: the patch embedding reads one channel (torchvision's reads RGB).
    model.conv_proj = nn.Conv2d(1, 32, kernel_size=7, stride=7)
    return model


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    dynamo = "--dynamo" in sys.argv[1:]
    out = args[0] if args else "vit.onnx"
    torch.manual_seed(0)
    model = small_vit().eval()
    x = torch.randn(2, 1, 28, 28)
    if dynamo:
        batch = torch.export.Dim("batch")
        torch.onnx.export(model, (x,), out, dynamo=True, opset_version=18,
                          input_names=["input"], output_names=["output"],
                          dynamic_shapes={"x": {0: batch}})
    else:
        torch.onnx.export(model, (x,), out, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
