"""Independent reference for fair-runtime's tests: torchvision 0.26 on PyTorch 2.11.

Usage:
  python torchvision_check.py names
      Prints JSON {model: [[state-dict name, shape], ...]} for torchvision's own models
      (built on the meta device: no weights are allocated).
  python torchvision_check.py run DIR MODEL CLASSES
      Loads DIR/weights.safetensors (written by fair-pruner) into torchvision's MODEL with
      strict=True, runs DIR/input.safetensors in eval mode and writes DIR/torch_output.safetensors.
      Then builds a fresh torchvision model (seed 7), randomises its BatchNorm statistics,
      saves its state dict to DIR/tv_weights.safetensors and its eval output on the same input to
      DIR/tv_output.safetensors, for the Rust side to load and compare.
"""
import json
import sys

import torch
import torchvision
from safetensors.torch import load_file, save_file

NAMES = [
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "alexnet", "resnet18", "resnet34", "resnet50", "densenet121",
]


def build(name, classes):
    return getattr(torchvision.models, name)(weights=None, num_classes=classes)


def names():
    out = {}
    with torch.device("meta"):
        for name in NAMES:
            model = build(name, 1000)
            out[name] = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    json.dump(out, sys.stdout)


def run(directory, name, classes):
    torch.set_num_threads(1)
    x = load_file(f"{directory}/input.safetensors")["input"]
    model = build(name, classes)
    model.load_state_dict(load_file(f"{directory}/weights.safetensors"), strict=True)
    model.eval()
    with torch.no_grad():
        save_file({"output": model(x).contiguous()}, f"{directory}/torch_output.safetensors")

    torch.manual_seed(7)
    fresh = build(name, classes)
    with torch.no_grad():
        for m in fresh.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    fresh.eval()
    state = {k: v.contiguous() for k, v in fresh.state_dict().items()}
    save_file(state, f"{directory}/tv_weights.safetensors")
    with torch.no_grad():
        save_file({"output": fresh(x).contiguous()}, f"{directory}/tv_output.safetensors")


if __name__ == "__main__":
    if sys.argv[1] == "names":
        names()
    elif sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
