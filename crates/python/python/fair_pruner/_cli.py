"""The ``fair-pruner`` console command: runs the bundled Rust binary (``bin/fair-pruner``,
the same program ``cargo build -p fair-cli`` makes) in place of this process, with the
installed torch wheel's libtorch on the library path."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def _torch_lib() -> Path:
    """``torch/lib`` of the installed torch package (found without importing torch)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        sys.exit("error: fair-pruner needs PyTorch 2.11 (pip install torch==2.11.*)")
    return Path(spec.origin).parent / "lib"


def main() -> None:
    """Replaces this process with the bundled ``fair-pruner`` binary: same arguments, exit
    status, output and signals as the Rust command."""
    exe = Path(__file__).parent / "bin" / "fair-pruner"
    if not exe.is_file():
        sys.exit(f"error: this fair_pruner installation lacks its command binary ({exe})")
    env = dict(os.environ)
    lib = str(_torch_lib())
    env["LD_LIBRARY_PATH"] = lib + (os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    # `prune --torchrun` runs the generated finetune.py with this interpreter, which has torch.
    env.setdefault("FAIR_PRUNER_PYTHON", sys.executable)
    os.execve(exe, ["fair-pruner", *sys.argv[1:]], env)


if __name__ == "__main__":
    main()
