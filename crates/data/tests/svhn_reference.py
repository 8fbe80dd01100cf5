"""Writes an SVHN-style MAT-file with SciPy, and the bytes fair-data must load from it as
computed by numpy (the test compares; nothing here uses fair-pruner).

usage: svhn_reference.py CASE OUT_DIR

Writes OUT_DIR/CASE.mat and, for a file that must load, OUT_DIR/CASE.pixels (the images as
u8 [N, 3, 32, 32], C order) and OUT_DIR/CASE.labels (little-endian int64, 10 -> 0).
"""

import sys

import numpy as np
import scipy.io

case, out = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(sum(map(ord, case)))


def svhn(n, label_dtype):
    """X as SVHN stores it (32, 32, 3, N), uint8; y (N, 1) with every label 1..=10."""
    X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = np.resize(np.arange(1, 11), n)
    rng.shuffle(y)
    return X, y.reshape(n, 1).astype(label_dtype)


def expect(X, y):
    # MATLAB's X(i, j, c, n) is numpy's X[i, j, c, n] (savemat writes Fortran order);
    # [N, 3, 32, 32] row-major puts image, channel, row, column.
    pixels = np.ascontiguousarray(X.transpose(3, 2, 0, 1))
    assert pixels.shape == (X.shape[3], 3, 32, 32)
    labels = y.reshape(-1).astype(np.int64)
    labels[labels == 10] = 0
    with open(f"{out}/{case}.pixels", "wb") as f:
        f.write(pixels.tobytes())
    with open(f"{out}/{case}.labels", "wb") as f:
        f.write(labels.astype("<i8").tobytes())


def save(variables, compress):
    scipy.io.savemat(f"{out}/{case}.mat", variables, do_compression=compress)


if case == "compressed-uint8":
    X, y = svhn(23, np.uint8)
    save({"X": X, "y": y}, True)
    expect(X, y)
elif case == "plain-double":
    X, y = svhn(12, np.float64)
    save({"X": X, "y": y}, False)
    expect(X, y)
elif case == "compressed-double-reordered":
    # y before X, and other variables around them (skipped).
    X, y = svhn(17, np.float64)
    note = "not SVHN"
    other = rng.integers(0, 9, size=(40, 40)).astype(np.float64)
    save({"note": note, "y": y, "other": other, "X": X, "more": {"a": 1}}, True)
    expect(X, y)
elif case == "plain-one-image":
    X, y = svhn(1, np.uint8)
    save({"X": X, "y": y}, False)
    expect(X, y)
elif case.startswith("bad-label"):
    X, y = svhn(9, np.float64)
    y[6, 0] = {"bad-label-11": 11, "bad-label-0": 0, "bad-label-half": 2.5}[case]
    save({"X": X, "y": y}, case != "bad-label-0")
elif case == "missing-y":
    X, _ = svhn(3, np.uint8)
    save({"X": X, "labels": np.ones((3, 1))}, True)
elif case == "missing-X":
    _, y = svhn(3, np.uint8)
    save({"y": y}, True)
elif case == "x-wrong-shape":
    X = rng.integers(0, 256, size=(28, 28, 1, 4), dtype=np.uint8)
    save({"X": X, "y": np.ones((4, 1))}, True)
elif case == "x-double":
    X, y = svhn(2, np.uint8)
    save({"X": X.astype(np.float64), "y": y}, True)
elif case == "y-count":
    X, y = svhn(4, np.uint8)
    save({"X": X, "y": y[:3]}, False)
else:
    sys.exit(f"unknown case {case}")
