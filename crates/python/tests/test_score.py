"""fair_pruner.score and ratios, against the CLI's score file on the same model and data."""

import json
import subprocess


def test_scores_equal_the_cli_score_file_and_ratios_count_within_layers(venv, rust_binary, tmp_path):
    m = venv.run(
        f"""
        import json, torch, fair_pruner as fp
        from safetensors.torch import save_file
        from models import SmallNet, data
        torch.manual_seed(0)
        net, (x, y) = SmallNet(), data(n=80)
        s = fp.score(net, x[:1], calibration=(x, y), criteria=["u", "r"])
        open({str(tmp_path / "m.onnx")!r}, "wb").write(fp._export_onnx(net, x[:1]))
        save_file({{"inputs": x, "labels": y}}, {str(tmp_path / "calib.safetensors")!r})
        open({str(tmp_path / "py-scores.json")!r}, "w").write(s.score_file)
        print(json.dumps({{
            "scores": {{c: {{l: a.tolist() for l, a in d.items()}} for c, d in s.items()}},
            "ratios": [fp.ratios(s, alpha=a) for a in (0.05, 0.3)],
        }}))
        """
    )
    cli = subprocess.run(
        [
            str(rust_binary), "score", "--graph", str(tmp_path / "m.onnx"),
            "--calibration", str(tmp_path / "calib.safetensors"),
            "--criteria", "u,r", "--out", str(tmp_path / "scores.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    file = json.loads((tmp_path / "scores.json").read_text())
    units = {l["layer"]: l["units"] for l in file["layers"]}
    assert set(m["scores"]) == {"u", "r"}
    for layer in file["layers"]:
        for c in ("u", "r"):
            ours = m["scores"][c][layer["layer"]]
            assert len(ours) == layer["units"]
            assert max(abs(a - b) for a, b in zip(ours, layer["scores"][c])) <= 1e-9, (c, layer["layer"])
    low, high = m["ratios"]
    assert list(low) == list(units)
    assert all(0 <= low[l] <= high[l] <= units[l] for l in units), m["ratios"]
    assert sum(high.values()) > sum(low.values()), m["ratios"]
    # The counts `fair-pruner ratios` requests per layer from the same scores.
    cli = subprocess.run(
        [
            str(rust_binary), "ratios", "--scores", str(tmp_path / "py-scores.json"),
            "--alpha", "0.3", "--rank-by", "u", "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    requested = {l["layer"]: l["requested"] for l in json.loads(cli.stdout)["layers"]}
    assert requested == high, (requested, high)


def test_scoring_leaves_the_callers_random_stream_alone(venv):
    m = venv.run(
        """
        import json, torch, fair_pruner as fp
        from models import SmallNet, data
        torch.manual_seed(0)
        net, (x, y) = SmallNet(), data(n=40)
        torch.manual_seed(123)
        expected = torch.rand(4).tolist()
        torch.manual_seed(123)
        fp.score(net, x[:1], calibration=(x, y), criteria=["r"])
        print(json.dumps({"expected": expected, "got": torch.rand(4).tolist()}))
        """
    )
    assert m["got"] == m["expected"], m


def test_the_export_skips_only_the_onnx_package_step(venv):
    """`_export_onnx` passes over the exporter's ONNX Script step (which imports `onnx`):
    its bytes equal plain `torch.onnx.export`'s, `onnx` is not imported by it, and the
    exporter's own function is back afterwards."""
    m = venv.run(
        """
        import io, json, sys, warnings, torch, fair_pruner as fp
        from torch.onnx._internal.torchscript_exporter import onnx_proto_utils as pu
        from models import SmallNet, data
        torch.manual_seed(0)
        net, (x, _) = SmallNet(), data(n=4)
        before = pu._add_onnxscript_fn
        ours = fp._export_onnx(net, x[:1])
        onnx_imported = "onnx" in sys.modules
        restored = pu._add_onnxscript_fn is before
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net.eval(), (x[:1],), buf, dynamo=False, opset_version=17,
                              do_constant_folding=False, input_names=["input"],
                              output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        print(json.dumps({"same": ours == buf.getvalue(), "onnx_imported": onnx_imported,
                          "onnx_after_plain": "onnx" in sys.modules, "restored": restored}))
        """
    )
    assert m["same"], "the export's bytes differ from torch.onnx.export's"
    assert not m["onnx_imported"], "exporting imported the onnx package"
    assert m["restored"], "the exporter's function was not restored"
    # The plain export does import it: the test can tell the difference.
    assert m["onnx_after_plain"], m
