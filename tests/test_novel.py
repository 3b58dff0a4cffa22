"""NG parts name their nearest known defect type; a part like none of them is NOVEL."""

from __future__ import annotations

import json
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
