"""Whether a ``--model`` / ``--models`` name can be loaded, told without loading weights, so that
``report --models A,B`` stops on a bad B before A's pairs are computed.

A name passes when it is a local folder that passes the folder checks (config, supported
architecture, safetensors weights, no ``auto_map`` unless ``--trust-remote-code``), a packaged
name, or a model hub id whose snapshot is in the HF cache (its config checked; offline, its
weights too) or, when the hub may be used, whose ``config.json`` the hub has at the revision (one
small request; a hub that cannot be reached is an error now rather than after the first model's
pairs). This mirrors the order of ``lf.load`` (:func:`layerfast.models.loading._resolve`); a
library function ``check_spec`` there would make it one place.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError


def check_model_spec(
    spec: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    own_tokenizer: bool = True,
    flag: str = "--model",
) -> None:
    """A UsageError naming ``flag`` and ``spec`` unless ``lf.load(spec, revision=...)`` can
    find the model (see the module docstring); reads no weights and downloads nothing."""
    from ..models import hub
    from ..models.folders import check_config, check_folder, check_weights
    from ..models.loading import PACKAGED, PACKAGED_NAMES

    path = Path(spec).expanduser()
    if path.is_file():
        raise UsageError(f"{flag} {spec}: a file; give the folder that holds config.json")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"{flag} {spec}: {path} has no config.json: not a HF model folder")
        if revision is not None:
            raise UsageError(f"--revision {revision} names a model hub commit; {spec} is a folder")
        check_folder(path, trust_remote_code=trust_remote_code, own_tokenizer=own_tokenizer)
        return
    if spec.lower() in PACKAGED and (revision is None or "/" not in spec):
        if revision is not None:
            raise UsageError(
                f"--revision {revision} names a model hub commit; {spec} is a packaged model "
                "(give its hub id, org/name, to read that revision from the hub)"
            )
        return
    neither = (
        f"{flag}: {spec!r} is neither a local model folder nor a packaged model "
        f"({', '.join(PACKAGED_NAMES)})"
    )
    if not hub.is_hub_id(spec):
        raise UsageError(
            f"{neither}, nor a model hub id (org/name: letters, digits, '-', '_', '.')"
        )
    rev = revision or hub.DEFAULT_REVISION
    cached = _cached_config(spec, rev, hub.cache_dir())
    off = hub.offline()
    if cached is not None:
        check_config(cached.parent, trust_remote_code, own_tokenizer)
        if off is not None:
            try:
                check_weights(cached.parent)
            except UsageError as e:
                raise UsageError(
                    f"{neither}; model hub id {spec!r} at revision {rev!r} is cached without "
                    f"all its weights ({e}) and the hub is off: {off}"
                ) from None
        return
    where = f"model hub id {spec!r} at revision {rev!r} is not in the HF cache ({hub.cache_dir()})"
    if off is not None:
        raise UsageError(
            f"{neither}, and {where} and the hub is off: {off}; a local folder or a packaged "
            "name works offline"
        )
    found, reason = _on_hub(spec, rev)
    if not found:
        raise UsageError(f"{neither}, and {where} nor on the hub ({reason})")


def _cached_config(repo_id: str, revision: str, cache: Path) -> Path | None:
    """The cached ``config.json`` of the revision, or None; never a network call."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision)
    except Exception:  # noqa: BLE001  (an unreadable cache entry counts as not cached)
        return None
    return Path(found) if isinstance(found, str) else None


def _on_hub(repo_id: str, revision: str) -> tuple[bool, str]:
    """(whether the hub has the id's ``config.json`` at ``revision``, why not)."""
    from huggingface_hub import file_exists

    try:
        if file_exists(repo_id, "config.json", revision=revision):
            return True, ""
    except Exception as e:  # noqa: BLE001  (network, HTTP, gated: the reason is the message)
        line = (str(e).strip().splitlines() or [""])[0][:200]
        return False, f"the hub could not be asked: {type(e).__name__}: {line}"
    return False, "no such model, or no config.json at that revision"
