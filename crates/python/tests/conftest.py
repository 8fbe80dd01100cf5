"""Builds the wheel once per session and installs it into a throwaway venv.

The venv is new (``python -m venv``, nothing but pip in it) and gets the cached torch 2.11
(the reference venv ``cargo xtask setup`` made, whose interpreter runs pytest) through a
``.pth`` path entry, since torch cannot be downloaded here; the wheel is installed with
``pip install --no-index``, so its dependencies (torch, numpy) must resolve offline. The
tests run their code in that venv's interpreter, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CRATE = Path(__file__).resolve().parent.parent
ROOT = CRATE.parent.parent


class Venv:
    """The throwaway venv with the wheel installed."""

    def __init__(self, path: Path):
        self.path = path
        self.python = path / "bin" / "python"
        self.command = path / "bin" / "fair-pruner"

    def run(self, code: str, cwd: Path | None = None) -> dict:
        """Runs ``code`` in the venv's interpreter; it prints one JSON object as its last
        stdout line, which is returned. A failing script fails the test with its stderr."""
        out = subprocess.run(
            [str(self.python), "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            cwd=cwd or Path(__file__).resolve().parent,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert out.returncode == 0, f"script failed ({out.returncode}):\n{out.stderr[-4000:]}"
        return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def venv(tmp_path_factory) -> Venv:
    wheel_dir = tmp_path_factory.mktemp("wheels")
    release = ["--release"] if os.environ.get("FAIR_PRUNER_WHEEL_RELEASE") else []
    built = subprocess.run(
        [sys.executable, str(CRATE / "build_wheel.py"), "--out", str(wheel_dir), *release],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, f"building the wheel failed:\n{built.stderr[-4000:]}"
    wheel = built.stdout.strip().splitlines()[-1]
    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    site_dir = next((path / "lib").glob("python3*/site-packages"))
    # The cached torch (and numpy) of the interpreter running pytest.
    torch_site = Path(__import__("torch").__file__).parent.parent
    (site_dir / "_cached_torch.pth").write_text(f"{torch_site}\n")
    pip = subprocess.run(
        [str(path / "bin" / "python"), "-m", "pip", "install", "--no-index", "--quiet", wheel],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, f"pip install failed:\n{pip.stdout}\n{pip.stderr}"
    return Venv(path)


@pytest.fixture(scope="session")
def rust_binary() -> Path:
    """The workspace's own `fair-pruner` (the wheel bundles this build of it)."""
    exe = ROOT / "target" / ("release" if os.environ.get("FAIR_PRUNER_WHEEL_RELEASE") else "debug") / "fair-pruner"
    assert exe.is_file(), f"{exe} is missing"
    return exe
