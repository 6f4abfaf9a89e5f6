"""report.files: strict JSON (NaN/inf -> null, numpy values), CSV, and the save_* outputs."""

from __future__ import annotations

import csv
import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

from layerfast.estimators.ablation import AblationResult
from layerfast.report import files


def strict_loads(text: str):
    """json.loads that refuses the non-standard constants NaN, Infinity and -Infinity."""

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_to_jsonable_nonfinite_and_numpy():
    payload = {
        "nan": float("nan"),
        "inf": math.inf,
        "ninf": -math.inf,
        "ok": 1.5,
        "int": 3,
        "bool": True,
        "none": None,
        "text": "a",
        "np_nan": np.float32("nan"),
        "np_inf": np.float64(np.inf),
        "np_int": np.int64(7),
        "np_bool": np.bool_(False),
        "array": np.array([1.0, np.nan, np.inf, -np.inf]),
        "matrix": np.array([[1, 2], [3, 4]], dtype=np.int32),
        "nested": {"list": [np.nan, (np.float16(2.0), [np.inf])], np.int64(5): "numpy key"},
        "tuple": (1, float("nan")),
    }
    out = files.to_jsonable(payload)
    assert out["nan"] is None and out["inf"] is None and out["ninf"] is None
    assert out["ok"] == 1.5 and out["int"] == 3 and out["bool"] is True and out["none"] is None
    assert out["np_nan"] is None and out["np_inf"] is None
    assert out["np_int"] == 7 and type(out["np_int"]) is int
    assert out["np_bool"] is False
    assert out["array"] == [1.0, None, None, None]
    assert out["matrix"] == [[1, 2], [3, 4]]
    assert out["nested"] == {"list": [None, [2.0, [None]]], 5: "numpy key"}
    assert out["tuple"] == [1, None]
    json.dumps(out, allow_nan=False)  # strict


def test_write_json_is_strict(tmp_path):
    path = files.write_json(
        tmp_path / "x.json", {"v": np.array([np.nan, 1.0]), "s": np.inf, "n": np.float64("nan")}
    )
    assert path == tmp_path / "x.json"
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text and text.endswith("\n")
    assert strict_loads(text) == {"v": [None, 1.0], "s": None, "n": None}
    with pytest.raises(ValueError):
        strict_loads('{"a": NaN}')  # the checker itself refuses bare NaN


def test_write_json_refuses_unknown_types(tmp_path):
    with pytest.raises(TypeError):
        files.write_json(tmp_path / "x.json", {"obj": object()})


def test_write_csv(tmp_path):
    path = files.write_csv(tmp_path / "x.csv", [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    with open(path, newline="") as f:
        assert list(csv.DictReader(f)) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]


def test_save_ablation_and_shapley(tmp_path):
    players = ["attn0", "mlp0", "attn1", "mlp1"]
    abl = AblationResult(
        players=players,
        full=0.8,
        values=np.array([0.7, 0.25, 0.8, np.nan]),
        chance=0.25,
        margin=0.1,
        utility="acc",
    )
    written = files.save_ablation(tmp_path, abl, {"model": "m", "task": "t"})
    assert [p.name for p in written] == [
        "ablation.json",
        "ablation.csv",
        "ablation.png",
        "ablation.svg",
    ]
    assert (tmp_path / "ablation.svg").read_text().lstrip().startswith("<?xml")
    data = strict_loads((tmp_path / "ablation.json").read_text())
    assert data["values"][3] is None and data["drops"][3] is None and data["model"] == "m"
    assert data["cornerstones"] == ["mlp0"]

    res = SimpleNamespace(
        players=players,
        values=np.array([0.1, 0.5, 0.0, 0.2]),
        stderr=np.full(4, np.nan),
        method="proximity",
        to_dict=lambda: {
            "values": [0.1, 0.5, 0.0, 0.2],
            "stderr": [math.nan] * 4,
            "empty": math.nan,
        },
    )
    written = files.save_shapley(tmp_path, res, {"model": "m", "task": "t"})
    assert [p.name for p in written] == [
        "shapley.json",
        "shapley.csv",
        "shapley.png",
        "shapley.svg",
    ]
    data = strict_loads((tmp_path / "shapley.json").read_text())
    assert data["stderr"] == [None] * 4 and data["empty"] is None


def test_environment_records_cores_and_torch_threads():
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        env = files.environment()
    finally:
        torch.set_num_threads(before)
    assert env["torch_threads"] == 1
    assert env["machine"].endswith(f"{os.cpu_count()} cores")
