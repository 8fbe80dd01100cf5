"""The torchvision side of `cargo xtask bench loader`.

usage: loader_reference.py ROOT WORKERS BATCH RESIZE CROP LIMIT

Reads torchvision.datasets.ImageFolder(ROOT) in order (no shuffle) through
DataLoader(batch_size=BATCH, num_workers=WORKERS) with the standard evaluation transforms
Resize(RESIZE) + CenterCrop(CROP) + ToTensor() + Normalize(ImageNet mean, std), stopping after
LIMIT images (0: all). Prints one JSON line: images, seconds (from building the dataset to the
last batch), and the process's own peak RSS and its children's largest (getrusage, bytes).
The bench measures the memory of the whole process tree itself, from outside.
"""

import json
import resource
import sys
import time

import torch
from torchvision import datasets, transforms


def main():
    root = sys.argv[1]
    workers, batch, resize, crop, limit = (int(v) for v in sys.argv[2:7])
    torch.set_num_threads(1)
    start = time.perf_counter()
    t = transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    ds = datasets.ImageFolder(root, transform=t)
    if limit:
        ds = torch.utils.data.Subset(ds, range(min(limit, len(ds))))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=False, num_workers=workers
    )
    images, checksum = 0, 0.0
    for x, y in loader:
        images += x.shape[0]
        checksum += float(x[:, :, 0, 0].sum())
    seconds = time.perf_counter() - start
    kib = 1024
    print(
        json.dumps(
            {
                "images": images,
                "seconds": seconds,
                "checksum": checksum,
                "self_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib,
                "children_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                * kib,
            }
        )
    )


if __name__ == "__main__":
    main()
