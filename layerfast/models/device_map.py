"""A device map's keys checked against the model's own module names, before any weight is read:
a key that names no module (a typo) and a module no key covers are errors naming them, with what
valid names look like. accelerate's rules: keys are module names ("" is the whole model) and
every tensor of the state dict must fall under one. The map itself is placed by
:mod:`.placement`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch import nn

from ..errors import UsageError

FLAG = "device_map= (--device-map)"
SHOWN = 5  # names listed in an error before "and N more"


def check_device_map(model: nn.Module, device_map: dict[str, Any], where: str = "") -> None:
    """UsageError unless every key of ``device_map`` names a module of ``model`` ("" is the
    whole model) and every tensor of its state dict falls under a key (accelerate's rules). The
    message lists the culprits and what valid names look like; ``where`` (e.g. the folder)
    prefixes it."""
    tensors = list(model.state_dict(keep_vars=True))
    names = {n for n, _ in model.named_modules(remove_duplicate=False)}
    unknown = [str(k) for k in device_map if k not in names]
    keys = [str(k) for k in device_map if k in names]
    uncovered = [t for t in tensors if not any(k in ("", t) or t.startswith(k + ".") for k in keys)]
    if not unknown and not uncovered:
        return
    problems = [f"no module of the model is called {_few(unknown)}"] if unknown else []
    if uncovered:
        problems.append(f"no key gives a device to {_few(_summarise(uncovered, tensors))}")
    raise UsageError(
        f"{where + ': ' if where else ''}{FLAG}: {'; '.join(problems)}. Keys are module names "
        f'of the model such as {", ".join(_outline(model))}, or "" for the whole model'
    )


def _few(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _summarise(uncovered: list[str], tensors: list[str]) -> list[str]:
    """The uncovered tensors as the largest modules none of whose tensors is covered."""
    total: Counter[str] = Counter(p for t in tensors for p in _prefixes(t))
    missing: Counter[str] = Counter(p for t in uncovered for p in _prefixes(t))
    out = (next((p for p in _prefixes(t) if missing[p] == total[p]), t) for t in uncovered)
    return list(dict.fromkeys(out))


def _prefixes(name: str) -> list[str]:
    """The modules above tensor ``name``, outermost first: "a.b.w" -> ["a", "a.b"]."""
    parts = name.split(".")
    return [".".join(parts[:cut]) for cut in range(1, len(parts))]


def _outline(model: nn.Module) -> list[str]:
    """The names a typical map uses: each decoder block (the longest ModuleList; first and
    last) and every other module beside the path down to it."""
    lists = [(len(m), n) for n, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    blocks = max(lists)[1] if lists else None
    out: list[str] = []

    def cover(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if full == blocks:
                last = len(child) - 1
                out.append(f'"{full}.0"' + (f' ... "{full}.{last}"' if last > 0 else ""))
            elif blocks is not None and blocks.startswith(full + "."):
                cover(child, full)
            else:
                out.append(f'"{full}"')

    cover(model, "")
    return out
