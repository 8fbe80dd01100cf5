"""Reference side of the `paper` preset fidelity test: the authors' package `network-pruner`
2.16 on a small MLP whose hidden layers are Linear -> ReLU(inplace=True), behind an input
BatchNorm1d left at PyTorch's default momentum.

Usage: python paper_preset_parity.py OUT_DIR

Writes to OUT_DIR:
  weights.safetensors      the trained state dict, saved *before* the package runs (its
                           training-mode R-Score passes move the BatchNorm statistics)
  calibration.safetensors  `inputs` and `labels` of the calibration loader, in loader order
  reference.json           the package's U-Scores (`D_j`) and R-Scores (`RE_j_hat`) of every
                           hidden layer (`get_metrics`) and its per-layer counts (`get_ratios`)
                           at several α

Two behaviours of the package show here, and the preset must reproduce both:
  * its forward hook keeps the Linear output tensor, which the in-place ReLU then
    overwrites, so the U-Scores are read after the ReLU;
  * it scores layer j after j + 1 training-mode R-Score passes over the loader, each of which
    moves the BatchNorm running statistics (momentum 0.1) that the eval-mode U passes use.
"""
import json
import random
import sys

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file
from Network_Pruner import FAIR_Pruner as fp

CLASSES, PER_CLASS, BATCH = 4, 32, 32
ALPHAS = [0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5]


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(144)
        self.classifier = nn.Sequential(
            nn.Linear(144, 48), nn.ReLU(inplace=True),
            nn.Linear(48, 32), nn.ReLU(inplace=True),
            nn.Linear(32, 24), nn.ReLU(inplace=True),
            nn.Linear(24, CLASSES),
        )

    def forward(self, x):
        return self.classifier(self.norm(torch.flatten(x, 1)))


class CalibrationSet(torch.utils.data.TensorDataset):
    """A TensorDataset with the attributes the package reads to find the classes."""

    def __init__(self, x, y):
        super().__init__(x, y)
        self.targets = y.tolist()
        self.classes = [str(c) for c in range(CLASSES)]


def synthetic(templates, per_class, generator):
    y = torch.arange(CLASSES).repeat_interleave(per_class)
    x = 0.5 + templates[y] + 1.5 * torch.randn(len(y), 1, 12, 12, generator=generator)
    perm = torch.randperm(len(y), generator=generator)
    return x[perm].contiguous(), y[perm].contiguous()


def main(out):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(3)
    templates = torch.randn(CLASSES, 1, 12, 12, generator=g)
    x_train, y_train = synthetic(templates, 200, g)
    x_cal, y_cal = synthetic(templates, PER_CLASS, g)

    model = Mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    model.train()
    for _ in range(2):
        for i in range(0, len(y_train), 32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_train[i:i + 32]), y_train[i:i + 32]).backward()
            opt.step()
    # Running statistics that differ from the calibration data's, so the drift is visible.
    with torch.no_grad():
        model.norm.running_mean.mul_(0.3)
        model.norm.running_var.mul_(3.0)
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/weights.safetensors")
    save_file({"inputs": x_cal, "labels": y_cal}, f"{out}/calibration.safetensors")

    loader = torch.utils.data.DataLoader(CalibrationSet(x_cal, y_cal), batch_size=BATCH, shuffle=False)
    results = fp.get_metrics(
        model, loader, device=torch.device("cpu"),
        the_samplesize_for_compute_distance=PER_CLASS,
        results_save_path=f"{out}/results.pkl",
    )
    layers = ["classifier.0", "classifier.2", "classifier.4"]
    reference = {
        "layers": layers,
        "batch_size": BATCH,
        "r": [results[f"RE_{j}_hat"].double().tolist() for j in range(len(layers))],
        "u": [results[f"D_{j}"].double().tolist() for j in range(len(layers))],
        "ratios": {str(a): fp.get_ratios(model, results, ToD_level=a) for a in ALPHAS},
    }
    with open(f"{out}/reference.json", "w") as f:
        json.dump(reference, f)


if __name__ == "__main__":
    main(sys.argv[1])
