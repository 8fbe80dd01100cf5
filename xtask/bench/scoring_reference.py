"""Reference side of `cargo xtask bench scoring`: the authors' `network-pruner` 2.16.

Usage: python scoring_reference.py OUT_DIR THREADS CLASSES PER_CLASS [--data-only]

Builds CIFAR VGG16-BN (torchvision's VGG16-BN features, global average pool, 512→512→classes
head: the names of fair-pruner's `vgg16_bn_cifar`), randomly initialised with seed 0, writes
its weights and CLASSES × PER_CLASS calibration images to OUT_DIR, then times
`get_metrics` (R- and U-Scores of every prunable layer, default settings: 128 projections)
on THREADS CPU threads and writes OUT_DIR/reference.json. With --data-only it stops after
writing the weights and images (the same ones: everything is drawn from seed 0 first).
"""
import json
import random
import sys
import time

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file
from Network_Pruner import FAIR_Pruner as fp


class CalibrationSet(torch.utils.data.TensorDataset):
    def __init__(self, x, y, classes):
        super().__init__(x, y)
        self.targets = y.tolist()
        self.classes = [str(c) for c in range(classes)]


def main(out, threads, classes, per_class, data_only=False):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    random.seed(0)
    model = torchvision.models.vgg16_bn(weights=None, num_classes=classes)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, classes))
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/weights.safetensors")
    y = torch.arange(classes).repeat_interleave(per_class)
    x = torch.randn(len(y), 3, 32, 32) + 0.3 * y.view(-1, 1, 1, 1).float() / classes
    perm = torch.randperm(len(y))
    x, y = x[perm].contiguous(), y[perm].contiguous()
    save_file({"inputs": x, "labels": y}, f"{out}/calibration.safetensors")
    if data_only:
        return
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.0  # the package's R passes would otherwise move the statistics
    loader = torch.utils.data.DataLoader(CalibrationSet(x, y, classes), batch_size=64, shuffle=False)
    start = time.perf_counter()
    results = fp.get_metrics(model, loader, device=torch.device("cpu"),
                             the_samplesize_for_compute_distance=per_class,
                             results_save_path=f"{out}/results.pkl")
    seconds = time.perf_counter() - start
    layers = sum(1 for k in results if k.startswith("D_") and k.endswith("_s2b_idx"))
    with open(f"{out}/reference.json", "w") as f:
        json.dump({"seconds": seconds, "layers": layers, "threads": threads}, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
         data_only=sys.argv[5:] == ["--data-only"])
