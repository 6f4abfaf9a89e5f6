"""Whether a ``--model`` / ``--models`` name can be loaded, told without loading weights
(:func:`layerfast.models.loading.check_spec`), so that ``report --models A,B`` stops on a bad B
before A's pairs are computed; the message names the flag."""

from __future__ import annotations

from ..errors import UsageError


def check_model_spec(
    spec: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    own_tokenizer: bool = True,
    flag: str = "--model",
) -> None:
    """A UsageError naming ``flag`` and ``spec`` unless ``lf.load(spec, revision=...)`` can
    find the model; reads no weights and downloads nothing."""
    from ..models.loading import check_spec

    try:
        check_spec(spec, revision, trust_remote_code, own_tokenizer, f"--revision {revision}")
    except UsageError as e:
        raise UsageError(f"{flag}: {e}") from None
