"""torchvision's ImageFolder with its standard evaluation transforms, for crates/data/tests/folder.rs.

usage: folder_reference.py [--mode L] ROOT OUT MEAN STD RESIZE CROP_H CROP_W [RESIZE CROP_H CROP_W ...]

For every (RESIZE, CROP_H, CROP_W): Resize(RESIZE) + CenterCrop((CROP_H, CROP_W)) + ToTensor()
+ Normalize(MEAN, STD) (MEAN and STD comma-separated) over every image of
torchvision.datasets.ImageFolder(ROOT), written as little-endian float32 [N, C, H, W] to
OUT.<k>.bin; OUT.json holds the classes and the samples (path relative to ROOT, label).
With --mode L, every image is first converted to grey with PIL's convert("L") (what
finetune.py does for a 1-channel model), so C = 1.
"""

import json
import os
import sys

import torch
from torchvision import datasets, transforms


def main():
    args = sys.argv[1:]
    mode = "RGB"
    if args[:1] == ["--mode"]:
        mode, args = args[1], args[2:]
    root, out, mean, std = args[:4]
    mean = [float(v) for v in mean.split(",")]
    std = [float(v) for v in std.split(",")]
    rest = [int(v) for v in args[4:]]
    configs = [rest[i : i + 3] for i in range(0, len(rest), 3)]
    for k, (resize, ch, cw) in enumerate(configs):
        t = transforms.Compose(
            [
                transforms.Lambda(lambda im: im.convert(mode)),
                transforms.Resize(resize),
                transforms.CenterCrop((ch, cw)),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        )
        ds = datasets.ImageFolder(root, transform=t)
        x = torch.stack([ds[i][0] for i in range(len(ds))]).contiguous()
        x.numpy().astype("<f4").tofile(f"{out}.{k}.bin")
    meta = {
        "classes": ds.classes,
        "samples": [[os.path.relpath(p, root), label] for p, label in ds.samples],
    }
    with open(f"{out}.json", "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main()
