"""Reference side of the parity test: the authors' package `network-pruner` 2.16.

Usage: python network_pruner_parity.py OUT_DIR

Trains a small CNN (net.toml) on synthetic 4-class data, then writes to OUT_DIR:
  weights.safetensors      the trained state dict
  calibration.safetensors  `inputs` and `labels` of the calibration loader, in loader order
  reference.json           the package's R-Scores and U-Scores (`get_metrics`; U-Scores of
                           RUNS runs with different seeds), its per-layer
                           counts (`get_ratios`) at several α, and pooled U-Scores computed
                           independently with NumPy/SciPy

The package updates BatchNorm running statistics as a side effect of its R-Score passes
(training mode) and reads U-Scores in eval mode afterwards. BatchNorm momentum is set to 0
before calling it, so those updates leave the statistics unchanged and both sides see the
same model; fair-pruner never touches them.
"""
import json
import random
import sys

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file
from scipy.stats import wasserstein_distance
from Network_Pruner import FAIR_Pruner as fp

CLASSES, PER_CLASS, BATCH = 4, 32, 32
ALPHAS = [0.005, 0.01, 0.05, 0.1, 0.2]
RUNS = 5


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(288, 24), nn.ReLU(), nn.Linear(24, CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class CalibrationSet(torch.utils.data.TensorDataset):
    """A TensorDataset with the attributes the package reads to find the classes."""

    def __init__(self, x, y):
        super().__init__(x, y)
        self.targets = y.tolist()
        self.classes = [str(c) for c in range(CLASSES)]


def synthetic(templates, per_class, generator):
    y = torch.arange(CLASSES).repeat_interleave(per_class)
    x = templates[y] + 0.8 * torch.randn(len(y), 1, 12, 12, generator=generator)
    perm = torch.randperm(len(y), generator=generator)
    return x[perm].contiguous(), y[perm].contiguous()


def main(out):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    templates = torch.randn(CLASSES, 1, 12, 12, generator=g)
    x_train, y_train = synthetic(templates, 200, g)
    x_cal, y_cal = synthetic(templates, PER_CLASS, g)

    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(3):
        for i in range(0, len(y_train), 32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_train[i:i + 32]), y_train[i:i + 32]).backward()
            opt.step()
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/weights.safetensors")
    save_file({"inputs": x_cal, "labels": y_cal}, f"{out}/calibration.safetensors")

    # Independent pooled U-Scores (eval mode, spatial mean per channel, SciPy W1, max over pairs).
    pooled = {}
    feats = {}
    hooks = [model.features[i].register_forward_hook(
        lambda m, a, o, name=f"features.{i}": feats.__setitem__(name, o.detach())) for i in (0, 4)]
    per_class = {}
    with torch.no_grad():
        for c in range(CLASSES):
            model(x_cal[y_cal == c])
            per_class[c] = {k: v.mean(dim=(2, 3)).numpy() for k, v in feats.items()}
    for h in hooks:
        h.remove()
    for name in ("features.0", "features.4"):
        units = per_class[0][name].shape[1]
        pooled[name] = [
            max(wasserstein_distance(per_class[a][name][:, j], per_class[b][name][:, j])
                for a in range(CLASSES) for b in range(a + 1, CLASSES))
            for j in range(units)
        ]

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.0
    loader = torch.utils.data.DataLoader(CalibrationSet(x_cal, y_cal), batch_size=BATCH, shuffle=False)
    # The package's sliced distances draw fresh random directions for every channel and
    # class pair, so one run disagrees with the next (see the docs); RUNS runs with different
    # seeds give a steadier reference for the conv layers' rank comparison.
    runs = []
    for seed in range(RUNS):
        torch.manual_seed(seed)
        random.seed(seed)
        runs.append(fp.get_metrics(
            model, loader, device=torch.device("cpu"),
            the_samplesize_for_compute_distance=PER_CLASS,
            results_save_path=f"{out}/results.pkl",
        ))
    results = runs[0]
    layers = ["features.0", "features.4", "classifier.0"]
    reference = {
        "layers": layers,
        "batch_size": BATCH,
        "r": [results[f"RE_{j}_hat"].double().tolist() for j in range(len(layers))],
        "u": [results[f"D_{j}"].double().tolist() for j in range(len(layers))],
        "u_runs": [[r[f"D_{j}"].double().tolist() for r in runs] for j in range(len(layers))],
        "ratios": {str(a): fp.get_ratios(model, results, ToD_level=a) for a in ALPHAS},
        "pooled": pooled,
    }
    with open(f"{out}/reference.json", "w") as f:
        json.dump(reference, f)


if __name__ == "__main__":
    main(sys.argv[1])
