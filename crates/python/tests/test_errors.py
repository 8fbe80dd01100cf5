"""Errors are FairPrunerError exceptions with the CLI's texts."""

import subprocess
import textwrap


def error_of(venv, body: str) -> dict:
    """Runs ``body`` (with ``x``, ``y`` calibration data) and returns what it raised."""
    body = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    code = (
        "import json, torch, torch.nn as nn, fair_pruner as fp\n"
        "from models import SmallNet, data\n"
        "x, y = data(n=60)\n"
        f"try:\n{body}\n"
        "    print(json.dumps({'raised': None}))\n"
        "except Exception as e:\n"
        "    print(json.dumps({'raised': type(e).__name__, 'text': str(e)}))\n"
    )
    return venv.run(code)


def test_calibration_with_one_class(venv):
    e = error_of(venv, "fp.prune(SmallNet(), x[:1], calibration=(x, torch.zeros_like(y)), target_macs=0.3)")
    assert e["raised"] == "FairPrunerError"
    assert "1 class" in e["text"], e


def test_nan_weights_are_named(venv):
    e = error_of(
        venv,
        """
net = SmallNet()
with torch.no_grad():
    net.stem[0].weight[0, 0, 0, 0] = float("nan")
fp.prune(net, x[:1], calibration=(x, y), target_macs=0.3)
""",
    )
    assert e["raised"] == "FairPrunerError"
    assert "stem.0.weight" in e["text"] and "NaN" in e["text"], e


def test_a_target_that_cannot_be_reached(venv):
    e = error_of(venv, "fp.prune(SmallNet(), x[:1], calibration=(x, y), target_macs=0.999)")
    assert e["raised"] == "FairPrunerError"
    assert "cannot be reached" in e["text"], e


def test_a_goal_out_of_range_and_two_goals(venv):
    e = error_of(venv, "fp.prune(SmallNet(), x[:1], calibration=(x, y), target_macs=1.5)")
    assert e["raised"] == "FairPrunerError" and "--target-macs" in e["text"], e
    e = error_of(venv, "fp.prune(SmallNet(), x[:1], calibration=(x, y), target_macs=0.5, alpha=0.1)")
    assert e["raised"] == "ValueError", e


def test_a_model_onnx_cannot_export(venv):
    e = error_of(
        venv,
        """
class Bad(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
    def forward(self, x):
        return torch.linalg.svdvals(self.conv(x))  # no ONNX export at opset 17
fp.prune(Bad(), x[:1], calibration=(x, y), target_macs=0.3)
""",
    )
    assert e["raised"] == "FairPrunerError", e
    assert "torch.onnx.export could not export" in e["text"] and "linalg_svdvals" in e["text"], e


def test_an_unsupported_op_is_named_with_the_cli_text(venv, rust_binary, tmp_path):
    e = venv.run(
        f"""
        import json, torch, torch.nn as nn, fair_pruner as fp
        from models import data
        class Shuffle(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 12, 3)
                self.up = nn.PixelShuffle(2)
                self.fc = nn.Linear(3, 10)
            def forward(self, x):
                return self.fc(self.up(self.conv(x)).mean((2, 3)))
        x, y = data(n=40)
        net = Shuffle()
        open({str(tmp_path / "m.onnx")!r}, "wb").write(fp._export_onnx(net, x[:1]))
        try:
            fp.prune(net, x[:1], calibration=(x, y), target_macs=0.3)
            print(json.dumps({{"raised": None}}))
        except fp.FairPrunerError as e:
            print(json.dumps({{"raised": "FairPrunerError", "text": str(e)}}))
        """
    )
    assert e["raised"] == "FairPrunerError"
    assert "'DepthToSpace'" in e["text"], e
    cli = subprocess.run(
        [str(rust_binary), "import", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert cli.returncode != 0
    assert e["text"] in cli.stderr, (e["text"], cli.stderr)


def test_texts_equal_the_console_commands(venv, tmp_path):
    """The same bad inputs through Python and the installed `fair-pruner` command."""
    onnx, calib = tmp_path / "m.onnx", tmp_path / "one_class.safetensors"
    e = venv.run(
        f"""
        import json, torch, fair_pruner as fp
        from safetensors.torch import save_file
        from models import SmallNet, data
        net, (x, y) = SmallNet(), data(n=60)
        open({str(onnx)!r}, "wb").write(fp._export_onnx(net, x[:1]))
        save_file({{"inputs": x, "labels": torch.zeros_like(y)}}, {str(calib)!r})
        def err(f):
            try:
                f()
            except fp.FairPrunerError as e:
                return str(e)
        print(json.dumps({{
            "one_class": err(lambda: fp.prune(net, x[:1], calibration=(x, torch.zeros_like(y)), target_macs=0.3)),
            "bad_bound": err(lambda: fp.score(net, x[:1], calibration=(x, y), max_memory="lots")),
        }}))
        """
    )

    def command(*args: str) -> str:
        out = subprocess.run([str(venv.command), *args], capture_output=True, text=True)
        assert out.returncode != 0, out
        return out.stderr

    # A calibration set with one class: the CLI's text, after its context line.
    cli = command("score", "--graph", str(onnx), "--calibration", str(calib), "--out", str(tmp_path / "s.json"))
    assert cli.strip() == f"error: scoring with the calibration data {calib}: {e['one_class']}", (cli, e)
    assert "1 class" in e["one_class"], e
    # A bound that is not a size: the same parser's words as the CLI's `--max-memory`.
    cli = command("score", "--graph", str(onnx), "--calibration", str(calib), "--out", str(tmp_path / "s.json"),
                  "--max-memory", "lots")
    prefix = "--max-memory: invalid value 'lots': "
    assert e["bad_bound"].startswith(prefix), e
    assert f"for '--max-memory <SIZE>': {e['bad_bound'].removeprefix(prefix)}\n" in cli, (cli, e)
