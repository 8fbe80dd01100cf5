"""Builds fair-pruner's wheel: the `fair-pruner` binary (crates/cli) bundled into the Python
package, then `maturin build` of this crate. Prints the wheel's path.

    python crates/python/build_wheel.py [--release] [--out DIR]

Needs maturin (`pip install maturin`) in this interpreter's environment, cargo, and the
workspace's libtorch wiring (`cargo xtask setup`). Without --release the dev profile is used
(the workspace's optimised debug build, reusing `cargo build`'s artifacts)."""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

CRATE = Path(__file__).resolve().parent
ROOT = CRATE.parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", action="store_true", help="optimised release build")
    ap.add_argument("--out", default=str(ROOT / "target" / "wheels"), help="wheel directory")
    args = ap.parse_args()
    profile = ["--release"] if args.release else []
    subprocess.run(["cargo", "build", "--quiet", "-p", "fair-cli", *profile], cwd=ROOT, check=True)
    exe = ROOT / "target" / ("release" if args.release else "debug") / "fair-pruner"
    bin_dir = CRATE / "python" / "fair_pruner" / "bin"
    bin_dir.mkdir(exist_ok=True)
    shutil.copy2(exe, bin_dir / "fair-pruner")
    os.makedirs(args.out, exist_ok=True)
    for old in glob.glob(os.path.join(args.out, "fair_pruner-*.whl")):
        os.remove(old)
    maturin = [sys.executable, "-m", "maturin"]
    subprocess.run(
        [*maturin, "build", "--quiet", "--auditwheel", "skip", "--compatibility", "linux", "-m", str(CRATE / "Cargo.toml"), "--out", args.out, *profile],
        cwd=ROOT,
        check=True,
    )
    wheels = glob.glob(os.path.join(args.out, "fair_pruner-*.whl"))
    if len(wheels) != 1:
        sys.exit(f"error: expected one wheel in {args.out}, found {wheels}")
    print(wheels[0])


if __name__ == "__main__":
    main()
