"""Export: conversion parity, atomic writes, and every refusal of a bad model directory."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.errors import BadInput, BadModel
from edge_runtime.model import load_model_dir
from edge_runtime.preprocess import to_tensor
from edge_runtime.sidecar import Sidecar


def test_exported_model_matches_keras_and_sidecar(untrained_run, untrained_model_dir):
    from train.model import load_model

    model = load_model_dir(untrained_model_dir)
    sc = model.sidecar
    assert sc.parity["images"] >= 256
    assert sc.parity["max_abs_diff"] <= 1e-4 and sc.parity["verdict_disagreements"] == 0
    with np.load(untrained_run / "validation.npz") as z:
        images, scores = z["images"], z["scores"]
    x = to_tensor(images, sc.input)
    onnx_emb = model.embed(x)
    keras_emb = load_model(untrained_run / "embedding.keras").predict(x, verbose=0)
    assert onnx_emb.shape == (len(images), 128) and onnx_emb.dtype == np.float32
    assert np.max(np.abs(onnx_emb - keras_emb)) <= 1e-4
    np.testing.assert_allclose(model.score(onnx_emb, x), scores, rtol=1e-4, atol=1e-5)


def test_sidecar_round_trips_through_its_schema(untrained_model_dir):
    sc = Sidecar.load(untrained_model_dir / "model.json")
    again = Sidecar.from_dict(json.loads(sc.to_json()))
    assert again.to_dict() == sc.to_dict()
    assert again.input.tensor_shape(3) == (3, 936)


def test_export_cli_writes_both_files(untrained_run, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["export", "--run", str(untrained_run), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    assert "parity: 256 images" in capsys.readouterr().out


def test_export_int8_records_its_figures(untrained_run, tmp_path):
    from export.build import export_run

    lines = []
    result = export_run(untrained_run, tmp_path / "q", quantize="int8", log=lines.append)
    q = result.sidecar.quantization
    assert q["type"] == "int8-static" and q["bytes_int8"] < q["bytes_fp32"] / 2
    assert q["validation_images"] > 0 and 0 <= q["verdict_flips"] <= q["validation_images"]
    assert q["kept"] == (not q["rejected_because"]) and "min_speedup" in q["bounds"]
    assert any(line.startswith("export: int8 kept" if q["kept"] else "export: int8 rejected")
               for line in lines)  # fmt: skip
    model = load_model_dir(tmp_path / "q")  # whichever was kept, the pair is consistent
    ops = {n.op_type for n in __import__("onnx").load(tmp_path / "q" / "model.onnx").graph.node}
    assert ("QLinearMatMul" in ops) == q["kept"], ops  # the mlp: no convolution, no float head
    assert q["float_ops"] == []
    assert model.sidecar.schema_version == 8


def test_int8_quantizes_the_convolutions_and_leaves_the_head_in_float(tmp_path):
    """What static int8 makes of the scaled branch: QLinearConv for every convolution (its ReLU
    absorbed), the pooling, concat and embedding MatMul after the last one in float, and
    embeddings that follow fp32's."""
    import onnx
    import onnxruntime as ort
    from conftest import write_untrained_run

    from export.build import export_run
    from export.onnx_convert import quantize_int8
    from train.model import input_spec

    spec = input_spec("cnn", (56, 64))  # the scaled network: global max and mean pooling
    run = write_untrained_run(tmp_path / "run", arch="cnn", n_val=40, spec=spec)
    export_run(run, tmp_path / "fp32", quantize="off", log=lambda *_: None)
    fp32 = (tmp_path / "fp32" / "model.onnx").read_bytes()
    with np.load(run / "validation.npz") as z:
        x = to_tensor(z["images"], spec)
    int8, float_ops = quantize_int8(fp32, x)

    def ops(graph: bytes) -> list[str]:
        return [n.op_type for n in onnx.load_from_string(graph).graph.node]

    assert ops(int8).count("QLinearConv") == ops(fp32).count("Conv") > 0
    assert "Conv" not in ops(int8) and "Relu" not in ops(int8)
    assert {"GlobalAveragePool", "Concat", "MatMul"} <= set(float_ops) <= set(ops(int8))
    assert not [op for op in ops(int8) if op in ("QLinearMatMul", "QLinearGlobalAveragePool")]
    e32, e8 = (
        ort.InferenceSession(g, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
        for g in (fp32, int8)
    )
    assert np.corrcoef(e32.ravel(), e8.ravel())[0, 1] > 0.99


def test_auto_keeps_a_fast_branch_in_fp32_and_a_bad_mode_is_one_line(untrained_run, tmp_path):
    """The untrained 26×36 branch embeds in tens of µs: `auto` does not try int8 there (it
    gained 1.0–1.3× at batch 1 and lost at batch 64); an unknown mode is refused."""
    from export.build import export_run

    lines = []
    result = export_run(untrained_run, tmp_path / "a", log=lines.append)
    assert result.sidecar.quantization == {}
    assert any("--quantize auto tries int8 from" in line for line in lines), lines
    with pytest.raises(BadInput, match="--quantize 'int4': use one of auto, int8, off"):
        export_run(untrained_run, tmp_path / "b", quantize="int4", log=lambda *_: None)


@pytest.mark.parametrize(
    "version, quantization",
    [
        (6, {"type": "int8-dynamic", "kept": False, "rejected_because": ["slower"],
             "bounds": {"max_flip_rate": 0.005, "max_auroc_drop": 0.002}}),
        (7, {"type": "int8-static", "kept": True, "rejected_because": [], "added_escapes": 0,
             "bounds": {"max_added_escapes": 1, "min_speedup": 1.1}}),  # no float_ops
    ],
)  # fmt: skip
def test_older_sidecars_with_their_int8_figures_load(
    untrained_model_dir, tmp_path, version, quantization
):
    old = tmp_path / "old"
    shutil.copytree(untrained_model_dir, old)
    d = json.loads((old / "model.json").read_text())
    d["schema_version"] = version
    d["quantization"] = quantization
    (old / "model.json").write_text(json.dumps(d))
    model = load_model_dir(old)
    assert model.sidecar.schema_version == version
    assert model.sidecar.quantization == quantization
    x = np.zeros((2, *model.spec.tensor_shape(2)[1:]), np.float32)
    assert np.isfinite(model.score_batch(x)).all()


def test_failure_between_the_two_files_keeps_the_old_pair(
    untrained_run, untrained_model_dir, tmp_path, monkeypatch
):
    import export.build as build

    target = tmp_path / "live"
    shutil.copytree(untrained_model_dir, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    calls = []
    real_stage = build.stage_bytes

    def stage_then_fail(path, data):
        calls.append(path.name)
        if path.name == "model.json":  # the ONNX is staged, the sidecar write dies
            raise OSError(28, "No space left on device")
        return real_stage(path, data)

    monkeypatch.setattr(build, "stage_bytes", stage_then_fail)
    with pytest.raises(BadInput, match=r"No space left on device\); nothing was replaced"):
        build.export_run(untrained_run, target, opset=18, log=lambda *_: None)
    assert calls == ["model.onnx", "model.json"]
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # no temp files either
    load_model_dir(target)


def _corrupt(model_dir: Path, tmp_path: Path, edit) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    d = json.loads((bad / "model.json").read_text())
    edit(d, bad)
    (bad / "model.json").write_text(json.dumps(d))
    return bad


def _drop(d, key):
    del d[key]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d, _: d.update(model_sha256="0" * 64), "does not match model_sha256"),
        (
            lambda d, _: d["reference"].update(vector=d["reference"]["vector"][:-1]),
            "has 127 values",
        ),
        (lambda d, _: d["reference"]["vector"].__setitem__(3, float("nan")), "finite numbers"),
        (lambda d, _: d["threshold"].update(value=float("inf")), "must be finite"),
        (lambda d, _: _drop(d, "metric"), "missing field 'metric.name'"),
        (lambda d, _: d.update(schema_version=99), "schema_version 99"),
        (lambda d, _: d["input"].update(width=30), "input shape"),
        (lambda d, _: d["metric"].update(name="cosine"), "unknown metric"),
        (lambda d, _: d["output"].update(dim=64), "output.dim is 64"),
    ],
)
def test_runtime_refuses_a_bad_sidecar(untrained_model_dir, tmp_path, edit, message):
    bad = _corrupt(untrained_model_dir, tmp_path, edit)
    with pytest.raises(BadModel, match=message) as e:
        load_model_dir(bad)
    assert str(bad) in str(e.value)


def test_runtime_refuses_truncated_onnx(untrained_model_dir, tmp_path):
    from edge_runtime.files import sha256_file

    def truncate(d, bad):
        onnx = bad / "model.onnx"
        onnx.write_bytes(onnx.read_bytes()[:5000])
        d["model_sha256"] = sha256_file(onnx)  # even with a matching hash, it must not load

    bad = _corrupt(untrained_model_dir, tmp_path, truncate)
    with pytest.raises(BadModel, match="onnxruntime cannot load it"):
        load_model_dir(bad)


def test_runtime_refuses_missing_files(untrained_model_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(untrained_model_dir, bad)
    (bad / "model.onnx").unlink()
    with pytest.raises(BadModel, match=r"model\.onnx: missing"):
        load_model_dir(bad)
    (bad / "model.json").unlink()
    with pytest.raises(BadModel, match=r"model\.json: missing"):
        load_model_dir(bad)


def test_runtime_refuses_unreadable_json(untrained_model_dir, tmp_path):
    bad = _corrupt(untrained_model_dir, tmp_path, lambda d, _: None)
    (bad / "model.json").write_text('{"schema_version": 1,')
    with pytest.raises(BadModel, match="not readable JSON"):
        load_model_dir(bad)


def _export_cli(run_dir: Path, out: Path, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["export", "--run", str(run_dir), "--out", str(out)])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("name", ["embedding.keras", "validation.npz"])
def test_export_of_a_truncated_run_file_is_one_line_and_exit_2(
    untrained_run, tmp_path, capsys, name
):
    """Issue 11 F5: a truncated file in the run folder is bad input, not a traceback."""
    run_dir = tmp_path / "run"
    shutil.copytree(untrained_run, run_dir)
    f = run_dir / name
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    out = tmp_path / "m"
    code, err = _export_cli(run_dir, out, capsys)
    assert code == 2 and len(err) == 1 and str(f) in err[0], err
    assert not out.exists()  # nothing half-written


def test_export_into_an_unwritable_folder_is_one_line_and_exit_2(untrained_run, tmp_path, capsys):
    blocker = tmp_path / "a-file"  # a folder that cannot be made, even as root
    blocker.write_text("x")
    code, err = _export_cli(untrained_run, blocker / "m", capsys)
    assert code == 2 and len(err) == 1 and str(blocker / "m") in err[0], err
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_exported_files_follow_the_umask(untrained_run, tmp_path, umask, mode):
    """Issue 11 F6: staged files were created 0600 whatever the umask, so another user (the
    line's service account) could not read the model."""
    from export.build import export_run

    old = os.umask(umask)
    try:
        export_run(untrained_run, tmp_path / "m", log=lambda *_: None)
    finally:
        os.umask(old)
    for name in ("model.onnx", "model.json"):
        assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) == mode, name


def test_parity_reports_the_images_it_compared(untrained_run, tmp_path, capsys):
    """Issue 11: 'parity: 256 images' when validation held 64 — the other 192 are shifted,
    dimmed copies made to reach 256. Both counts are now said, and kept in the sidecar."""
    out = tmp_path / "m"
    assert main(["export", "--run", str(untrained_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity: 256 images compared (64 validation + 192 shifted copies)" in printed
    parity = json.loads((out / "model.json").read_text())["parity"]
    assert parity["images"] == 256 and parity["validation_images"] == 64
    assert parity["shifted_copies"] == 192


def test_a_score_on_the_threshold_is_a_tie_not_a_conversion_error():
    from export.build import verdict_flips

    keras = np.array([0.10, 0.20, 0.30])
    onnx = np.array([0.10, 0.2000001, 0.31])  # the second sits on the threshold, rounding differs
    assert verdict_flips(keras, onnx, 0.20) == (0, 1)
    assert verdict_flips(keras, np.array([0.10, 0.20, 0.19]), 0.25) == (1, 0)  # a real flip
