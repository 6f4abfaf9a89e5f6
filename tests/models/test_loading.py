"""lf.load's input errors (each a UsageError naming the value) and its safety: a model folder's
own code never runs and pickled weights are never read."""

from __future__ import annotations

import json
import pickle
import re
import sys
from pathlib import Path

import pytest
import torch

import layerfast as lf
from layerfast import cli
from layerfast.errors import UsageError
from layerfast.models import parse_dtype
from layerfast.models.loading import fetch_model


def test_parse_dtype():
    assert parse_dtype("BF16") is torch.bfloat16
    assert parse_dtype(torch.float16) is torch.float16
    assert parse_dtype(None) is None
    with pytest.raises(UsageError, match="unknown dtype 'int3'.*bf16"):
        parse_dtype("int3")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty HF cache with the hub off: a hub id that is not there fails without a network
    call."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_unknown_model_name(offline_hub):
    with pytest.raises(UsageError, match="'no-such-model' is neither a local model folder"):
        lf.load("no-such-model")


def test_folder_without_config(tmp_path):
    with pytest.raises(UsageError, match="has no config.json"):
        lf.load(tmp_path)


# --- safety: a folder's own code never runs, pickles are never read (issue 13, item 6) ---------
EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("the folder's code ran")
from transformers import LlamaConfig, LlamaForCausalLM


class EvilConfig(LlamaConfig):
    pass


class EvilForCausalLM(LlamaForCausalLM):
    config_class = EvilConfig
"""


def _with_own_code(folder: Path, marker: Path, model_type: str = "llama") -> Path:
    """Give ``folder`` an ``auto_map`` to modeling code that writes ``marker`` on import."""
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForCausalLM": "evil.EvilForCausalLM",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_folder_code_never_runs(model_copy, tmp_path):
    marker = tmp_path / "MARKER"
    folder = _with_own_code(model_copy("evil"), marker)
    with pytest.raises(UsageError) as info:
        lf.load(folder)
    message = str(info.value)
    assert str(folder) in message and "--trust-remote-code" in message
    assert "evil.EvilForCausalLM" in message
    assert not marker.exists()


def test_folder_code_of_an_unknown_type_never_runs(model_copy, tmp_path):
    marker = tmp_path / "MARKER"
    folder = _with_own_code(model_copy("evil"), marker, model_type="evil")
    with pytest.raises(UsageError, match="model_type 'evil'.*supported model_type values: .*llama"):
        lf.load(folder)
    with pytest.raises(UsageError, match="model_type 'evil'"):
        lf.load(folder, trust_remote_code=True)  # no adapter: refused before any code runs
    assert not marker.exists()


def test_tokenizer_code_never_runs(model_copy, tmp_path, tiny_tokenizer_fixture):
    folder = model_copy("evil-tokenizer")
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    path.write_text(json.dumps(config))
    with pytest.raises(UsageError, match=r"tokenizer_config.json names code.*--trust-remote-code"):
        lf.load(folder)
    assert lf.load(folder, tokenizer=tiny_tokenizer_fixture).n_blocks == 3  # not read then


def test_folder_code_never_runs_from_the_cli(model_copy, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    folder = _with_own_code(model_copy("evil"), marker)
    task = tmp_path / "task.jsonl"
    task.write_text(json.dumps({"context": "Q: 1+1?\nA:", "choices": ["2", "3"], "gold": 0}))
    for argv in (
        ["avss", "--model", folder, "--out", tmp_path / "out", "--no-progress"],
        ["ablate", "--model", folder, "--task", task, "--out", tmp_path / "o2", "--no-progress"],
        ["fetch", "--model", folder, "--task", "capitals"],
    ):
        assert cli.main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err
        assert str(folder) in err and "--trust-remote-code" in err and "Traceback" not in err
    assert not marker.exists()


def test_trust_remote_code_opts_in(model_copy, tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    marker = tmp_path / "MARKER"
    folder = _with_own_code(model_copy("trusted"), marker)
    model = lf.load(folder, trust_remote_code=True)
    assert marker.exists() and type(model.hf_model).__name__ == "EvilForCausalLM"


def test_transformers_is_told_explicitly(saved_folder, monkeypatch):
    """Defence in depth: every from_pretrained call says trust_remote_code=False (so transformers
    can never prompt) and use_safetensors=True (so it can never unpickle)."""
    import transformers

    calls = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        original = cls.from_pretrained

        def spy(*args, _original=original, _cls=cls, **kwargs):
            calls.append((_cls.__name__, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    lf.load(saved_folder)
    assert [name for name, _ in calls] == ["AutoModelForCausalLM", "AutoTokenizer"]
    assert all(kwargs["trust_remote_code"] is False for _, kwargs in calls)
    assert calls[0][1]["use_safetensors"] is True


class _Payload:
    """Unpickling this writes a marker file: a stand-in for a malicious pytorch_model.bin."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "unpickled"))


def test_pickle_weights_are_refused(model_copy, tmp_path):
    marker = tmp_path / "MARKER"
    folder = model_copy("pickled")
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump(_Payload(str(marker)), f)
    with pytest.raises(UsageError, match=r"pickle files \(pytorch_model.bin\).*safetensors only"):
        lf.load(folder)
    assert not marker.exists()


# --- a user's mistakes: one UsageError naming the culprit (issue 13, item 7) ---------------------
def test_config_but_no_weights(model_copy):
    folder = model_copy("empty")
    (folder / "model.safetensors").unlink()
    with pytest.raises(UsageError, match=f"{re.escape(str(folder))}: config.json but no weights"):
        lf.load(folder)


def test_missing_shard(model_copy):
    folder = model_copy("sharded")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {
        "metadata": {},
        "weight_map": {
            "model.norm.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors",
        },
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UsageError, match=r"missing: \['model-00002-of-00002.safetensors'\]"):
        lf.load(folder)


def test_truncated_weights(model_copy):
    folder = model_copy("truncated")
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(UsageError, match=re.escape(str(folder))):
        lf.load(folder)


def test_config_not_json(model_copy):
    folder = model_copy("badjson")
    (folder / "config.json").write_text('{\n  "model_type": "llama",\n  oops\n}')
    with pytest.raises(UsageError, match=r"config.json:3: not valid JSON"):
        lf.load(folder)


@pytest.mark.parametrize("model_type", ["bert", "t5", None])
def test_unsupported_architecture(model_copy, model_type):
    folder = model_copy("other")
    config = json.loads((folder / "config.json").read_text())
    config.pop("model_type")
    if model_type:
        config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError) as info:
        lf.load(folder)
    message = str(info.value)
    assert str(folder) in message
    assert ", ".join(lf.models.supported_model_types()) in message  # layerfast's own list
    assert "BertLMHeadModel" not in message and "ForCausalLM" not in message


def test_model_path_is_a_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(UsageError, match="model.gguf' is a file; give the folder"):
        lf.load(path)


@pytest.mark.parametrize(
    "device, message",
    [
        ("foo", "unknown device 'foo' \\(--device\\)"),
        ("meta", "device 'meta' \\(--device\\) holds no data"),
        ("xpu", "device 'xpu' \\(--device\\) cannot be used by this torch build"),
    ],
)
def test_unusable_device(tiny_llama, device, message):
    if device == "xpu" and hasattr(torch, "xpu") and torch.xpu.is_available():
        pytest.skip("this torch build has an XPU")
    with pytest.raises(UsageError, match=message):
        lf.load(tiny_llama, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only torch build")
def test_cuda_on_a_cpu_build(saved_folder):
    with pytest.raises(UsageError, match="device 'cuda' \\(--device\\) cannot be used.*CUDA"):
        lf.load(saved_folder, device="cuda")


def test_fetch_refuses_what_it_cannot_fetch(saved_folder, capsys, offline_hub):
    assert fetch_model(str(saved_folder)) == saved_folder  # a local folder: checked only
    with pytest.raises(UsageError, match="'meta-llama/Llama-3-8B' is neither.*not in the HF cache"):
        fetch_model("meta-llama/Llama-3-8B")
    assert cli.main(["fetch", "--model", "meta-llama/Llama-3-8B", "--task", "capitals"]) == 2
    err = capsys.readouterr().err
    assert "meta-llama/Llama-3-8B" in err and "Traceback" not in err
