"""Device maps are checked against the model's own names before any weight is read, an offload
folder that is a file is refused, a driver copy kept wholly on disk loads quietly, and
accelerate is imported by ``models/placement.py`` alone."""

from __future__ import annotations

import ast
import json
import logging
import re
import warnings
from pathlib import Path

import pytest
import torch

import layerfast as lf
from layerfast import cli
from layerfast.errors import UsageError
from layerfast.models import placement
from tests.helpers.tiny_models import tiny_model

# Every module of the tiny 3-block Llama of ``saved_folder`` (tests/models/conftest.py).
FULL_MAP = {
    "model.embed_tokens": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "cpu",
    "model.norm": "cpu",
    "model.rotary_emb": "cpu",
    "lm_head": "cpu",
}
EXAMPLES = ['"model.embed_tokens"', '"model.layers.0" ... "model.layers.2"', '"lm_head"']


@pytest.fixture
def no_weights_read(monkeypatch):
    """Fail the test if transformers starts reading the weights."""
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained ran although the device map was already wrong")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


def _message(folder: Path, device_map: dict, **kwargs) -> str:
    with pytest.raises(UsageError) as info:
        lf.load(folder, device_map=device_map, **kwargs)
    return str(info.value)


def test_a_typo_key_is_named_before_weights_are_read(saved_folder, no_weights_read):
    # All on one device: today transformers ignores the unknown key and loads silently.
    device_map = {"model.embed_tokenz": "cpu", "model.layers": "cpu", "model.norm": "cpu"}
    device_map["lm_head"] = "cpu"
    message = _message(saved_folder, device_map)
    assert str(saved_folder) in message and "device_map= (--device-map)" in message
    assert "no module of the model is called 'model.embed_tokenz'" in message
    assert "no key gives a device to 'model.embed_tokens'" in message
    assert all(example in message for example in EXAMPLES)
    assert '"" for the whole model' in message


def test_an_uncovered_module_is_named(saved_folder, tmp_path, no_weights_read):
    device_map = {k: v for k, v in FULL_MAP.items() if k not in ("lm_head", "model.layers.2")}
    message = _message(saved_folder, device_map, offload_folder=tmp_path / "off")
    assert "no key gives a device to 'model.layers.2', 'lm_head'" in message
    assert "no module of the model is called" not in message


def test_a_tensor_name_is_not_a_module(saved_folder, no_weights_read):
    device_map = {**FULL_MAP, "lm_head.weight": "cpu"}  # accelerate ignores such keys
    del device_map["lm_head"]
    message = _message(saved_folder, device_map)
    assert "called 'lm_head.weight'" in message and "device to 'lm_head'" in message


def test_many_culprits_are_counted(saved_folder, no_weights_read):
    typos = {f"model.layer.{i}": "cpu" for i in range(7)}
    message = _message(saved_folder, {"": "cpu", **typos})
    assert "'model.layer.0', 'model.layer.1', 'model.layer.2', 'model.layer.3', " in message
    assert "'model.layer.4' and 2 more" in message
    assert "no key gives a device" not in message  # "" covers everything


def test_a_model_object_map_is_checked_too(tiny_tokenizer_fixture):
    hf = tiny_model("gpt2", vocab_size=len(tiny_tokenizer_fixture), seed=1)
    with pytest.raises(UsageError, match=r"called 'transformer.hh.9'.*\"transformer.h.0\""):
        lf.load(hf, device_map={"": "cpu", "transformer.hh.9": "cpu"})
    with pytest.raises(UsageError, match="no key gives a device to 'lm_head'"):
        lf.load(hf, device_map={"transformer": "cpu"})


def test_a_valid_map_still_loads(saved_folder, tmp_path):
    whole = lf.load(saved_folder)
    for device_map in (FULL_MAP, {"": "cpu"}):
        split = lf.load(saved_folder, device_map=device_map, offload_folder=tmp_path / "off")
        ids = torch.tensor([[5, 9, 11, 3, 7]])
        assert torch.equal(split(ids), whole(ids))
    assert split.load_spec["device_map"] == {"": "cpu"}


def test_a_typo_map_from_the_cli(saved_folder, tmp_path, capsys):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({**FULL_MAP, "lm_haed": "cpu"}))
    argv = ["avss", "--model", saved_folder, "--device-map", path, "--out", tmp_path / "out"]
    assert cli.main([str(a) for a in [*argv, "--no-progress"]]) == 2
    err = capsys.readouterr().err
    assert "'lm_haed'" in err and "Traceback" not in err


# --- an offload folder that is a file (issue) ----------------------------------------------------
def test_an_offload_folder_that_is_a_file(saved_folder, tmp_path):
    path = tmp_path / "offload.bin"
    path.write_bytes(b"not a folder")
    pattern = re.escape(f"offload_folder= (--offload-folder) '{path}' is a file")
    with pytest.raises(UsageError, match=pattern):  # nothing is mapped to disk
        lf.load(saved_folder, device_map={"": "cpu"}, offload_folder=path)
    with pytest.raises(UsageError, match=pattern):
        placement.check_placement(None, "auto", None, path)
    from layerfast.models.placement import check_placement

    assert check_placement(None, {"": "cpu"}, None, tmp_path / "new") == {
        "device_map": {"": "cpu"},
        "offload_folder": str(tmp_path / "new"),
    }


# --- the CLI driver's copy wholly on disk (issue) ------------------------------------------------
META_NOTICE = "on the meta device because they were offloaded"


def _load_capturing(caplog, capfd, *args, **kwargs):
    caplog.clear()
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = lf.load(*args, **kwargs)
    said = caplog.text + capfd.readouterr().err + "".join(str(w.message) for w in caught)
    return model, said


def test_the_whole_model_on_disk_loads_quietly(saved_folder, caplog, capfd):
    whole = lf.load(saved_folder)
    on_disk, said = _load_capturing(caplog, capfd, saved_folder, device_map={"": "disk"})
    assert META_NOTICE not in said
    assert all(p.device.type == "meta" for p in on_disk.hf_model.parameters())
    assert on_disk.fingerprint(recompute=True) == whole.fingerprint(recompute=True)


def test_a_partial_offload_still_says_so_and_works(saved_folder, tmp_path, caplog, capfd):
    whole = lf.load(saved_folder)
    split, said = _load_capturing(
        caplog, capfd, saved_folder, device_map=FULL_MAP, offload_folder=tmp_path / "off"
    )
    assert META_NOTICE in said  # only the whole-model-on-disk case is quiet
    assert split.hf_model.model.layers[1].mlp.up_proj.weight.device.type == "meta"
    ids = torch.tensor([[4, 8, 15, 16, 23, 42]])
    assert torch.equal(split(ids), whole(ids))
    logger = logging.getLogger("accelerate.big_modeling")
    assert not logger.filters  # the filter was removed again


# --- where Ray workers run a load spec (moved here from evaluation/ray/pool.py) ------------------
def test_worker_device_type_and_gpus_of(tiny_llama):
    assert placement.worker_device_type(tiny_llama, None) == "cpu"
    assert placement.worker_device_type(tiny_llama, {"device_map": {"a": 0, "b": "cpu"}}) == "cuda"
    assert placement.worker_device_type(tiny_llama, {"device_map": {"": "disk"}}) == "cpu"
    assert placement.worker_device_type(tiny_llama, {"device": "cpu"}) == "cpu"
    assert placement.gpus_of(tiny_llama, {"device_map": {"a": 0, "b": "cuda:1", "c": "cpu"}}) == 2.0
    assert placement.gpus_of(tiny_llama, {"max_memory": {0: "1GiB", "1": "1GiB"}}) == 2.0
    assert placement.gpus_of(tiny_llama, {"device_map": {"a": True, "b": "cpu"}}) == 1.0
    # one GPU however it is spelled (counted as three different strings before)
    assert placement.gpus_of(tiny_llama, {"device_map": {"a": 0, "b": "0", "c": "cuda:0"}}) == 1.0
    assert placement.cuda_devices(tiny_llama) == []  # on the CPU


def test_only_placement_imports_accelerate():
    root = Path(lf.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(n.split(".")[0] == "accelerate" for n in names):
                found.append(str(path.relative_to(root)))
    assert sorted(set(found)) == [str(Path("models") / "placement.py")]
