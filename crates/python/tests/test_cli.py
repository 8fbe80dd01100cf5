"""The wheel's `fair-pruner` command behaves like the Rust binary."""

import subprocess


def both(venv, rust_binary, *args):
    return [subprocess.run([str(exe), *args], capture_output=True, text=True) for exe in (venv.command, rust_binary)]


def test_version_and_help_match_the_rust_binary(venv, rust_binary):
    for args in (["--version"], ["--help"], ["prune", "--help"]):
        ours, rust = both(venv, rust_binary, *args)
        assert ours.returncode == rust.returncode == 0
        assert ours.stdout == rust.stdout and ours.stdout, args


def test_errors_match_the_rust_binary(venv, rust_binary, tmp_path):
    ours, rust = both(venv, rust_binary, "info", "--graph", str(tmp_path / "missing.toml"))
    assert ours.returncode == rust.returncode != 0
    assert ours.stderr == rust.stderr and "missing.toml" in ours.stderr


def test_the_command_runs_a_zoo_model(venv, tmp_path):
    out = subprocess.run([str(venv.command), "info", "--model", "vgg11_bn"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "vgg11_bn" in out.stdout
