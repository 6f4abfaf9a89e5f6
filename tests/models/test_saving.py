"""Every model save is verified; a save that did not happen is an error naming the path
(issue 13, item 3: ``prune --save FILE`` printed "wrote" and exited 0 having saved nothing)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import layerfast as lf
from layerfast import cli
from layerfast.errors import UsageError
from layerfast.models.saving import check_save_path, save_pretrained_checked


def test_save_is_verified_and_reloads(tiny_llama, tmp_path):
    path = save_pretrained_checked(
        tiny_llama.hf_model, tiny_llama.tokenizer, tmp_path / "a" / "b", reload_check=True
    )
    assert path == tmp_path / "a" / "b"
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {
        p.name for p in path.iterdir()
    }
    again = lf.load(path)
    for (name, p), (_, q) in zip(
        tiny_llama.hf_model.named_parameters(), again.hf_model.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), name


def test_existing_file_is_refused(tiny_llama, tmp_path):
    target = tmp_path / "pruned.bin"
    target.write_text("keep me")
    with pytest.raises(UsageError, match=f"--save {target}: is an existing file"):
        save_pretrained_checked(tiny_llama.hf_model, tiny_llama.tokenizer, target)
    assert target.read_text() == "keep me"


def test_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="file is a file, so the folder cannot be created"):
        check_save_path(tmp_path / "file" / "model")


def test_a_silent_failure_is_caught(tiny_llama, tmp_path, monkeypatch):
    """transformers' save_pretrained may log and return; whatever the cause, the files decide."""
    hf = copy.deepcopy(tiny_llama.hf_model)
    monkeypatch.setattr(hf, "save_pretrained", lambda *a, **k: None)
    with pytest.raises(UsageError, match="the save failed: no readable config.json"):
        save_pretrained_checked(hf, None, tmp_path / "empty")


def test_files_left_from_an_earlier_save_do_not_count(tiny_llama, tmp_path, monkeypatch):
    import os

    folder = save_pretrained_checked(tiny_llama.hf_model, None, tmp_path / "old")
    for name in ("config.json", "model.safetensors"):
        st = (folder / name).stat()
        os.utime(folder / name, ns=(st.st_atime_ns, st.st_mtime_ns - 60 * 10**9))
    hf = copy.deepcopy(tiny_llama.hf_model)
    monkeypatch.setattr(hf, "save_pretrained", lambda *a, **k: None)
    with pytest.raises(UsageError, match="predate this save"):
        save_pretrained_checked(hf, None, folder)


def test_reload_check_finds_a_difference(tiny_llama, tmp_path, monkeypatch):
    hf = copy.deepcopy(tiny_llama.hf_model)
    original = hf.save_pretrained

    def save_then_change(path, *args, **kwargs):
        original(path, *args, **kwargs)
        with torch.no_grad():
            hf.lm_head.weight.mul_(2.0)  # the object now differs from what was written

    monkeypatch.setattr(hf, "save_pretrained", save_then_change)
    with pytest.raises(UsageError, match="the reloaded model differs: \\['lm_head.weight'\\]"):
        save_pretrained_checked(hf, None, tmp_path / "m", reload_check=True)


def test_prune_save_to_a_file_exits_2(saved_folder, tmp_path, capsys):
    task = tmp_path / "task.jsonl"
    task.write_text(
        "\n".join(
            json.dumps({"context": f"Q: {i}+1?\nA:", "choices": ["the cat", "dog"], "gold": 0})
            for i in range(4)
        )
    )
    texts = tmp_path / "calib.txt"
    texts.write_text("the cat sat on the mat\nAthens is to Greece as Baghdad is to Iraq\n")
    target = tmp_path / "pruned.safetensors"
    target.write_text("not a folder")
    argv = ["prune", "--model", saved_folder, "--task", task, "--texts", texts]
    argv += ["--by", "bi", "--fraction", "0.34", "--out", tmp_path / "out", "--no-progress"]
    code = cli.main([str(a) for a in [*argv, "--save", target]])
    out, err = capsys.readouterr()
    assert code == 2, out
    assert f"--save {target}: is an existing file" in err
    assert "Traceback" not in err and "wrote" not in out
    assert target.read_text() == "not a folder"
