"""Model hub ids load as ``from_pretrained`` loads them: from the HF cache (laid out here by hand,
as the hub lays it out), or downloaded into it, with no network call when ``HF_HUB_OFFLINE=1``;
the snapshot then takes the folder path (safetensors only, auto_map refused, digest cache)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.models import loading
from layerfast.models.loading import fetch_model
from tests.conftest import make_tiny_llama

MAIN = "a" * 40  # commit hashes: 40 hex digits
OTHER = "b" * 40


def put_in_cache(cache: Path, repo_id: str, folder: Path, commit: str, refs=("main",)) -> Path:
    """Lay ``folder`` out as the hub cache holds a snapshot: ``models--org--name/blobs/<hash>``,
    ``snapshots/<commit>/<file>`` linking to the blob, ``refs/<branch>`` holding the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)  # no newline, as the hub writes it
    return snapshot


@pytest.fixture
def network(monkeypatch):
    """Every attempt to open a connection or resolve a host name, recorded and refused."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("the tests make no network call")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, network) -> Path:
    """An empty HF cache, offline, and a layerfast cache of its own (fingerprints)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LAYERFAST_CACHE", str(tmp_path / "layerfast"))
    return cache


@pytest.fixture(scope="module")
def other_folder(tmp_path_factory, tiny_tokenizer_fixture) -> Path:
    """The tiny Llama of ``saved_folder`` with other random weights (seed 1)."""
    folder = tmp_path_factory.mktemp("other") / "tiny-llama-1"
    make_tiny_llama(tiny_tokenizer_fixture, seed=1).hf_model.save_pretrained(folder)
    tiny_tokenizer_fixture.save_pretrained(folder)
    return folder


def same_weights(a: lf.models.SublayerModel, b: lf.models.SublayerModel) -> bool:
    sa, sb = a.hf_model.state_dict(), b.hf_model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_cached_hub_id_loads_bit_identically(saved_folder, hub_cache, network):
    snapshot = put_in_cache(hub_cache, "org/tiny", saved_folder, MAIN)
    model = lf.load("org/tiny")
    folder = lf.load(saved_folder)
    assert same_weights(model, folder) and model.tokenizer is not None
    ids = torch.tensor([[5, 9, 11, 3, 7]])
    assert torch.equal(model(ids), folder(ids))
    assert model.name == "org/tiny"
    assert model.load_spec["model"] == "org/tiny" and model.load_spec["revision"] == MAIN
    assert lf.load(**model.load_spec).fingerprint() == folder.fingerprint()  # as a Ray worker
    again = lf.load("org/tiny")  # the digest cache applies to the snapshot folder
    assert again._digest_store["folder"] == str(snapshot.resolve())
    assert getattr(again, "_weights_digest", None) is not None
    assert fetch_model("org/tiny") == snapshot
    assert network == []


def test_a_revision_picks_its_snapshot(saved_folder, other_folder, hub_cache, network):
    put_in_cache(hub_cache, "org/tiny", saved_folder, MAIN)
    put_in_cache(hub_cache, "org/tiny", other_folder, OTHER, refs=("dev",))
    main, other = lf.load(saved_folder), lf.load(other_folder)
    assert same_weights(lf.load("org/tiny"), main)
    assert same_weights(lf.load("org/tiny", revision="main"), main)
    by_commit = lf.load("org/tiny", revision=OTHER)
    assert same_weights(by_commit, other) and by_commit.load_spec["revision"] == OTHER
    by_branch = lf.load("org/tiny", revision="dev")
    assert same_weights(by_branch, other) and by_branch.load_spec["revision"] == OTHER
    assert network == []


def test_an_absent_id_is_one_clear_error_without_network(hub_cache, network):
    with pytest.raises(UsageError) as info:
        lf.load("org/absent", revision="v2")
    message = str(info.value)
    for part in (
        "'org/absent'",
        "revision 'v2'",
        f"not in the HF cache ({hub_cache})",
        "could not be downloaded (the hub is off: HF_HUB_OFFLINE=1)",
        "a local folder or a packaged name works offline",
    ):
        assert part in message, (part, message)
    with pytest.raises(UsageError, match="'no-such-model' is neither.*revision 'main'"):
        lf.load("no-such-model")
    assert network == []


def test_a_cached_snapshot_without_weights_is_not_used(saved_folder, tmp_path, hub_cache):
    folder = Path(shutil.copytree(saved_folder, tmp_path / "no-weights"))
    (folder / "model.safetensors").unlink()
    snapshot = put_in_cache(hub_cache, "org/tiny", folder, MAIN)
    with pytest.raises(UsageError, match=f"its cached snapshot {snapshot} lacks weights"):
        lf.load("org/tiny")


def test_not_a_hub_id_either(hub_cache, network):
    for spec in ("org/name/extra", "./no/such/folder", "bad name!"):
        with pytest.raises(UsageError, match="neither a local model folder.*nor a model hub id"):
            lf.load(spec)
    with pytest.raises(UsageError, match="revision= 'main'.*a model object has none"):
        lf.load(torch.nn.Linear(2, 2), revision="main")
    assert network == []


def test_a_snapshot_with_its_own_code_is_refused(model_copy, hub_cache, tmp_path):
    folder = model_copy("evil")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(tmp_path / 'MARKER')!r}, 'w').write('ran')\n")
    snapshot = put_in_cache(hub_cache, "org/evil", folder, MAIN)
    with pytest.raises(UsageError, match=f"{snapshot}: config.json names code.*--trust-remote"):
        lf.load("org/evil")
    with pytest.raises(UsageError, match="--trust-remote-code"):
        fetch_model("org/evil")
    assert not (tmp_path / "MARKER").exists()


def test_packaged_names_win_unless_a_revision_is_given(
    saved_folder, other_folder, hub_cache, monkeypatch
):
    monkeypatch.setattr(loading, "packaged_model_folder", lambda asset, name: saved_folder)
    put_in_cache(hub_cache, "HuggingFaceTB/SmolLM2-135M-Instruct", other_folder, MAIN)
    packaged = lf.load("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert same_weights(packaged, lf.load(saved_folder))
    assert packaged.load_spec["revision"] is None
    hub = lf.load("HuggingFaceTB/SmolLM2-135M-Instruct", revision=MAIN)
    assert same_weights(hub, lf.load(other_folder))
    with pytest.raises(UsageError, match="revision= 'main'.*'smollm2-135m' is a packaged model"):
        lf.load("smollm2-135m", revision="main")
    with pytest.raises(UsageError, match="revision= 'main'.*is a local folder"):
        lf.load(saved_folder, revision="main")


# --- downloads: a stand-in for the hub, reached only through snapshot_download -------------------
class FakeHub:
    """``snapshot_download`` over local folders: ``local_files_only`` reads the real cache; a
    download copies the files matching ``allow_patterns`` into the cache layout."""

    def __init__(self, cache: Path, repos: dict[str, Path], fail: Exception | None = None):
        import huggingface_hub

        self.cache, self.repos, self.fail = cache, repos, fail
        self.real = huggingface_hub.snapshot_download
        self.downloads: list[list[str]] = []

    def __call__(self, repo_id, *, revision=None, cache_dir=None, allow_patterns=None, **kw):
        if kw.get("local_files_only"):
            return self.real(
                repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=allow_patterns, **kw
            )
        assert Path(cache_dir) == self.cache
        self.downloads.append(list(allow_patterns))
        if self.fail is not None:
            raise self.fail
        source = self.repos[repo_id]
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / MAIN
        snapshot.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if any(fnmatch.fnmatch(path.name, p) for p in allow_patterns):
                shutil.copyfile(path, snapshot / path.name)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(MAIN)
        return str(snapshot)


@pytest.fixture
def online(hub_cache, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def install(repos: dict[str, Path], fail: Exception | None = None) -> FakeHub:
        fake = FakeHub(hub_cache, repos, fail)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
        return fake

    return install


def test_a_download_fetches_config_first_then_the_safetensors(saved_folder, online):
    hub = online({"org/tiny": saved_folder})
    model = lf.load("org/tiny")
    assert same_weights(model, lf.load(saved_folder)) and model.tokenizer is not None
    first, second = hub.downloads
    assert "config.json" in first and "tokenizer.json" in first
    assert not any(p.endswith((".safetensors", ".bin", ".py")) for p in first)
    assert second == ["model.safetensors"]
    lf.load("org/tiny")  # now cached: no download
    assert len(hub.downloads) == 2


def test_a_download_of_a_sharded_repo_fetches_the_shards(saved_folder, tmp_path, online):
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(saved_folder, tmp_path / "sharded"))
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[:10]}
    halves["model-00002-of-00002.safetensors"] = names[10:]
    for shard, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, folder / shard, metadata={"format": "pt"})
    weight_map = {k: shard for shard, keys in halves.items() for k in keys}
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "pytorch_model.bin").write_bytes(b"never downloaded")
    hub = online({"org/sharded": folder})
    assert same_weights(lf.load("org/sharded"), lf.load(saved_folder))
    assert hub.downloads[1] == ["model.safetensors.index.json", *sorted(halves)]


def test_own_code_is_refused_before_any_weight_is_downloaded(model_copy, online):
    folder = model_copy("evil")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    hub = online({"org/evil": folder})
    with pytest.raises(UsageError, match="--trust-remote-code"):
        lf.load("org/evil")
    assert len(hub.downloads) == 1  # the config and tokenizer files only


def test_a_repo_without_safetensors_is_refused(model_copy, online):
    folder = model_copy("pickled")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    online({"org/pickled": folder})
    with pytest.raises(UsageError, match=r"'org/pickled' at revision 'main'.*safetensors"):
        lf.load("org/pickled")


def test_a_failed_download_says_why_in_one_line(hub_cache, online):
    from huggingface_hub.errors import LocalEntryNotFoundError

    error = LocalEntryNotFoundError("Got: ConnectError: [Errno -2] Name or service not known\n...")
    online({}, fail=error)
    with pytest.raises(UsageError) as info:
        lf.load("org/tiny")
    message = str(info.value)
    assert f"'org/tiny' at revision 'main' is not in the HF cache ({hub_cache})" in message
    assert "(LocalEntryNotFoundError: Got: ConnectError: [Errno -2] Name or service" in message
    assert "\n" not in message
