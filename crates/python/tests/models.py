"""Models and data the tests prune (imported by the scripts the tests run in the venv)."""

import torch
import torch.nn as nn


class SqueezeExcite(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, c // 4, 1)
        self.fc2 = nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))


class SmallNet(nn.Module):
    """conv-bn-relu, a depthwise conv with an SE gate, a pointwise conv, a linear head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.se = SqueezeExcite(16)
        self.pw = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, classes))

    def forward(self, x):
        return self.head(self.pw(self.se(self.dw(self.stem(x)))))


def data(n: int = 120, classes: int = 10, size: int = 32, seed: int = 0):
    """Class-structured random images: each class shifts the pixels by its own offset."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, size, size, generator=g) + (y.view(-1, 1, 1, 1).float() - classes / 2) * 0.3
    return x, y


def macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates per sample of the convs and linear layers, counted by hooks."""
    total = 0

    def conv(m, inp, out):
        nonlocal total
        total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    hooks = [
        m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model.eval()(x[:1])
    for h in hooks:
        h.remove()
    return total


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_pruned(original: nn.Module, pruned: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """What the tests assert about a pruned module, measured in plain PyTorch."""
    out = {
        "is_module": isinstance(pruned, nn.Module),
        "macs": [macs(original, x), macs(pruned, x)],
        "params": [params(original), params(pruned)],
        "keys_kept": set(pruned.state_dict()) <= set(original.state_dict()),
    }
    pruned.eval()
    with torch.no_grad():
        y_hat = pruned(x[:5])
    out["shape"] = list(y_hat.shape)
    traced = torch.jit.trace(pruned, x[:2])
    with torch.no_grad():
        out["trace_diff"] = (traced(x[:5]) - y_hat).abs().max().item()
    # One SGD step of the user's own loop.
    pruned.train()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.01)
    before = [p.detach().clone() for p in pruned.parameters()]
    loss = nn.functional.cross_entropy(pruned(x[:16]), y[:16])
    opt.zero_grad()
    loss.backward()
    opt.step()
    out["loss"] = loss.item()
    out["moved"] = sum(not torch.equal(b, p) for b, p in zip(before, pruned.parameters()))
    return out


def randomise_batchnorm(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (distinct per channel)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)


#: SmallNet's units: (module whose output the unit's readers see, a per-unit tensor that
#: tells which units the pruned model kept).
SMALLNET_UNITS = [
    ("stem.2", "stem.1.running_mean"),
    ("dw.2", "dw.1.running_mean"),
    ("se.fc1", "se.fc1.bias"),
    ("pw.2", "pw.1.running_mean"),
    ("head.2", "head.2.bias"),
]


def dead_unit_diff(original: nn.Module, pruned: nn.Module, x: torch.Tensor, units) -> float:
    """Largest difference between the pruned model's output and the original's with the
    removed units zeroed where their readers see them (eval mode). Which units were kept is
    read off the pruned model's per-unit tensors, whose values are the original's."""
    sd_o, sd_p = original.state_dict(), pruned.state_dict()
    hooks = []
    for module, key in units:
        o, p = sd_o[key], sd_p[key]
        kept = {int((o == v).nonzero()[0]) for v in p}
        removed = [i for i in range(o.numel()) if i not in kept]

        def zero(m, inp, out, removed=removed):
            out = out.clone()
            out[:, removed] = 0
            return out

        hooks.append(original.get_submodule(module).register_forward_hook(zero))
    try:
        with torch.no_grad():
            return (original.eval()(x) - pruned.eval()(x)).abs().max().item()
    finally:
        for h in hooks:
            h.remove()
