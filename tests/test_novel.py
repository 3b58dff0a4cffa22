"""NG parts name their nearest known defect type; a part like none of them is NOVEL."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from edge_runtime.errors import BadModel
from edge_runtime.scoring import Prototype, nearest_types
from edge_runtime.sidecar import Sidecar


def test_nearest_type_is_measured_in_radii_by_hand():
    protos = {
        "burr": Prototype(np.array([0.0, 0.0]), 1.0, 10),
        "crack": Prototype(np.array([10.0, 0.0]), 8.0, 10),
    }
    # (4, 0): 4 from burr (4 radii), 6 from crack (0.75 radii) → named burr, the nearer centre,
    # and not novel: it lies inside crack's wide radius
    (label, dist, novelty), (label2, _, novelty2), (_, _, far) = nearest_types(
        np.array([[4.0, 0.0], [0.5, 0.0], [5.0, 40.0]]), protos
    )
    assert (label, dist, novelty) == ("burr", 4.0, 0.75)
    assert label2 == "burr" and novelty2 == 0.5
    assert far > 1  # outside both radii: like neither
    assert nearest_types(np.zeros((1, 2)), {}) == []


def test_shaped_types_follow_their_spread_and_name_by_radii():
    """Schema 3: a type that spreads along one axis claims parts along it, not across it."""
    long_x = np.diag([1.0 / 25.0, 1.0])  # the "scratch" type spreads 5× wider along x
    protos = {
        "scratch": Prototype(np.array([0.0, 0.0]), 2.0, 10, long_x),
        "burr": Prototype(np.array([6.0, 6.0]), 2.0, 10, np.eye(2)),
    }
    along, across = nearest_types(np.array([[8.0, 0.0], [0.0, 4.0]]), protos)
    # (8, 0): Mahalanobis 8/5 = 1.6 from scratch (0.8 radii): a scratch, not novel
    assert along[0] == "scratch" and along[1] == pytest.approx(1.6) and along[2] < 1
    # (0, 4): 4 from scratch (2 radii), √(36+4) ≈ 6.3 from burr (3.2 radii): novel, a scratch
    assert across[0] == "scratch" and across[2] == pytest.approx(2.0)
    # Euclidean balls of the same radii would have called (8, 0) novel
    balls = {k: Prototype(p.vector, p.radius, p.n) for k, p in protos.items()}
    assert nearest_types(np.array([[8.0, 0.0]]), balls)[0][2] > 1


def test_schema_2_prototypes_without_shape_still_load_and_judge(untrained_model_dir, tmp_path):
    d = json.loads((untrained_model_dir / "model.json").read_text())
    ref = np.asarray(d["reference"]["vector"])
    d["schema_version"] = 2
    d["prototypes"] = {"1": {"vector": (ref + 1.0).tolist(), "radius": 0.5, "n": 5}}
    side = Sidecar.from_dict(d)
    assert side.prototypes["1"].inv_cov is None
    ((label, dist, novelty),) = nearest_types(ref[None, :] + 1.0, side.prototypes)
    assert label == "1" and dist == pytest.approx(0.0, abs=1e-9) and novelty < 1
    bad = {**d, "schema_version": 3}
    bad["prototypes"] = {"1": {**d["prototypes"]["1"], "inv_cov": [[1.0, 0.0]]}}
    with pytest.raises(BadModel, match=r"prototypes.1.inv_cov' is 1×2, needs \d+×\d+"):
        Sidecar.from_dict(bad)


def _with_prototypes(model_dir, tmp_path, radius: float):
    d = json.loads((model_dir / "model.json").read_text())
    dim = d["output"]["dim"]
    ref = np.asarray(d["reference"]["vector"])
    d["prototypes"] = {"1": Prototype(ref + 1.0, radius, 5).to_dict()}
    out = tmp_path / f"m{radius}"
    shutil.copytree(model_dir, out)
    (out / "model.json").write_text(json.dumps(d))
    assert len(d["prototypes"]["1"]["vector"]) == dim
    return out


@pytest.mark.parametrize(("radius", "expect"), [(1e-6, "NOVEL"), (1e6, "NG")])
def test_inspector_calls_a_part_novel_only_when_it_is_far_from_every_type(
    untrained_model_dir, tmp_path, radius, expect
):
    from edge_runtime.inspector import Inspector
    from edge_runtime.model import load_model_dir

    model = load_model_dir(_with_prototypes(untrained_model_dir, tmp_path, radius))
    insp = Inspector(model, threshold=-1.0)  # every part is rejected: only the kind is in doubt
    img = np.random.default_rng(0).integers(0, 256, (26, 36), dtype=np.uint8)
    j = insp.inspect(img)
    assert j.verdict == expect and j.nearest == "1" and j.type_distance > 0
    (many,) = insp.inspect_many([img])
    assert many.verdict == expect and many.nearest == "1"
    ok = Inspector(model, threshold=1e9).inspect(img)  # a good part has no type
    assert ok.verdict == "OK" and ok.nearest is None


def test_prototypes_round_trip_and_bad_ones_are_refused(untrained_model_dir, tmp_path):
    path = _with_prototypes(untrained_model_dir, tmp_path, 0.5) / "model.json"
    sc = Sidecar.load(path)
    assert sc.prototypes["1"].radius == 0.5 and sc.prototypes["1"].n == 5
    assert Sidecar.from_dict(json.loads(sc.to_json()))  # writes what it reads
    d = json.loads(path.read_text())
    d["prototypes"]["1"]["radius"] = 0
    with pytest.raises(BadModel, match=r"prototypes\.1\.radius"):
        Sidecar.from_dict(d)
    del d["prototypes"]  # a sidecar from before prototypes still loads
    d["prototypes"] = {}
    assert Sidecar.from_dict(d).prototypes == {}


def test_modbus_writes_novel_as_its_own_code_and_as_a_reject_coil():
    from edge_runtime.sinks.modbus import COILS, VERDICT_CODES

    assert VERDICT_CODES["NOVEL"] == 4
    assert [("NOVEL" in vs) for vs in COILS] == [False, True, False]  # the NG (reject) coil


# ------------------------------------------------------------- eval: known vs novel per label
def _kinds_folder(root, spec) -> tuple[list[np.ndarray], list[str]]:
    """A labeled folder of model-sized blobs: good, two kinds that become known types and one
    kind ("3") the prototypes never see, as a held-out defect would be. The first 4 parts of
    kind 2 also carry kind 1's defect, so some rejected parts are named after the wrong type."""
    import cv2

    rng = np.random.default_rng(1)
    cy, cx = spec.height // 2, spec.width // 2
    images, labels = [], []
    for label in ("0", "1", "2", "3"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            img = np.clip(rng.normal(90, 20, spec.patch_shape), 0, 255)
            if label == "1":
                img[cy - 3 : cy + 3, cx - 3 : cx + 3] += 120
            elif label == "2":
                img[:6, :6] -= 80
                if i < 4:
                    img[cy - 3 : cy + 3, cx - 3 : cx + 3] += 120
            elif label == "3":
                img[cy - 1 : cy + 1, :] += 150
            img = np.clip(img, 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / label / f"{i:02d}.png"), img)
            images.append(img)
            labels.append(label)
    return images, labels


@pytest.fixture(scope="module")
def kinds(untrained_model_dir, tmp_path_factory):
    """The folder, the exported model with prototypes of kinds 1 and 2 fitted to their own
    embeddings (kind 2: its single-defect parts; radius: the median distance, so some parts of
    each kind fall outside: NOVEL), and a threshold at the median score, so some parts pass
    and some are rejected."""
    from edge_runtime.model import load_model_dir
    from edge_runtime.preprocess import to_tensor

    tmp = tmp_path_factory.mktemp("kinds")
    model = load_model_dir(untrained_model_dir)
    images, labels = _kinds_folder(tmp / "data", model.spec)
    x = to_tensor(np.stack(images), model.spec)
    emb = model.embed(x).astype(np.float64)
    lab = np.array(labels)
    protos = {}
    for label, skip in (("1", 0), ("2", 4)):
        own = emb[lab == label][skip:]
        centre = own.mean(axis=0)
        radius = float(np.median(np.linalg.norm(own - centre, axis=1)))
        protos[label] = Prototype(centre, radius, len(own))
    d = json.loads((untrained_model_dir / "model.json").read_text())
    d["prototypes"] = {k: p.to_dict() for k, p in protos.items()}
    out = tmp / "model"
    shutil.copytree(untrained_model_dir, out)
    (out / "model.json").write_text(json.dumps(d))
    threshold = float(np.median(model.score(emb, x)))
    return tmp / "data", out, threshold


def test_eval_verdicts_are_the_lines_verdicts_image_by_image(kinds, tmp_path, capsys):
    """eval's known-vs-novel table counts what `run` would record: the same images judged one
    by one through Inspector.inspect at the --threshold override give the same counts."""
    from edge_runtime.cli import main
    from edge_runtime.datasets import load_labeled
    from edge_runtime.inspector import Inspector
    from edge_runtime.model import load_model_dir

    data, model_dir, threshold = kinds
    out = tmp_path / "eval.json"
    argv = ["eval", "--model", str(model_dir), "--data", str(data), "--json", str(out)]
    assert main([*argv, "--threshold", repr(threshold)]) == 0
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())
    verdicts = figures["verdicts"]

    # the line's path: each image judged alone by Inspector.inspect at the same threshold
    model = load_model_dir(model_dir)
    insp = Inspector(model, threshold=threshold)
    ds = load_labeled(data, spec=model.spec)
    expect: dict[str, dict] = {}
    for image, label in zip(ds.images, ds.labels, strict=True):
        j = insp.inspect(image)
        row = expect.setdefault(label, {"n": 0, "OK": 0, "NG": 0, "NOVEL": 0, "named_right": 0})
        row["n"] += 1
        row[j.verdict] += 1
        row["named_right"] += j.verdict in ("NG", "NOVEL") and j.nearest == label
    assert set(verdicts) == {"0", "1", "2", "3"} == set(expect)
    for label, row in verdicts.items():
        assert row["n"] == row["OK"] + row["NG"] + row["NOVEL"] == 12
        assert {k: row[k] for k in ("n", "OK", "NG", "NOVEL")} == {
            k: expect[label][k] for k in ("n", "OK", "NG", "NOVEL")
        }
        assert row["known"] is (label in ("1", "2"))
        if row["known"]:
            assert row["named_right"] == expect[label]["named_right"]
        else:  # good parts and the held-out kind have no right name
            assert row["named_right"] is None
    # the table is worth reading only if it holds every kind of verdict
    totals = {v: sum(r[v] for r in verdicts.values()) for v in ("OK", "NG", "NOVEL")}
    assert all(totals.values()), totals
    known = [r for r in verdicts.values() if r["known"]]
    assert any(0 < r["named_right"] < r["NG"] + r["NOVEL"] for r in known), verdicts
    # and it agrees with the detection figures at the same (overridden) threshold
    assert figures["threshold"] == threshold and figures["threshold_from"] == "cli"
    assert totals["OK"] == figures["tn"] + figures["fn"]
    assert verdicts["0"]["NG"] + verdicts["0"]["NOVEL"] == figures["fp"]
    assert set(figures["per_label"]) == {"1", "2", "3"}  # unchanged beside it

    lines = printed.splitlines()
    head = next(i for i, s in enumerate(lines) if s.startswith("  verdicts by label"))
    assert head > next(i for i, s in enumerate(lines) if "per defect label" in s)
    assert lines[head + 1].split() == ["label", "n", "OK", "NG", "NOVEL", "named", "right"]
    row_re = re.compile(r"^    (\S+)(?: \(.*\))?\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)  (.+)$")
    table = {m[1]: m.groups()[1:] for m in map(row_re.match, lines[head + 2 : head + 6]) if m}
    assert set(table) == set(verdicts)
    for label, row in verdicts.items():
        *counts, right = table[label]
        assert [int(c) for c in counts] == [row["n"], row["OK"], row["NG"], row["NOVEL"]]
        if row["known"]:
            assert right == f"{row['named_right']}/{row['NG'] + row['NOVEL']}"
        else:
            assert right.startswith("—")
    assert table["3"][-1] == "— (not a known type)"


def test_eval_without_prototypes_adds_no_verdicts(untrained_model_dir, kinds, tmp_path, capsys):
    """A model from before prototypes prints and writes what it always did."""
    from edge_runtime.cli import main

    data, _, threshold = kinds
    out = tmp_path / "eval.json"
    argv = ["eval", "--model", str(untrained_model_dir), "--data", str(data), "--json", str(out)]
    assert main([*argv, "--threshold", repr(threshold)]) == 0
    assert "verdicts by label" not in capsys.readouterr().out
    assert "verdicts" not in json.loads(out.read_text())
