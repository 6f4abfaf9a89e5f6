"""Make ``lm_eval.simple_evaluate(model="layerfast", ...)`` work after ``import layerfast``,
without ``import layerfast`` importing lm-evaluation-harness.

The harness finds models only in its registry (``lm_eval.api.registry.model_registry``; 0.4.13
reads no entry points), so someone must register the name in the process that evaluates.
``import layerfast`` calls :func:`install`, which registers at once when the registry module is
already imported, and otherwise puts a finder on ``sys.meta_path`` that waits for the harness to
import ``lm_eval.api.registry``, registers right after that module has run, and removes itself.
What is registered is a placeholder ("module:attribute" string, the harness's own lazy form), so
the model class (and torch) load only when the harness asks for ``"layerfast"``.

The harness fills its registry with its own models only when the registry is empty at the first
``get_model`` call, so :func:`register` imports ``lm_eval.models`` (a table of placeholders) first:
registering ours alone would hide ``"hf"`` and the other built-in names.

This module imports nothing but the standard library's ``sys`` and ``warnings``.
"""

from __future__ import annotations

import sys
import warnings

MODEL_NAME = "layerfast"
TARGET = "layerfast.bridges.lm_eval_model:LayerfastLM"
REGISTRY_MODULE = "lm_eval.api.registry"


def register() -> None:
    """Register ``"layerfast"`` in the harness's model registry (imports lm_eval); idempotent."""
    import lm_eval.models  # noqa: F401  (the built-in names first, see the module docstring)
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=TARGET)


def install() -> None:
    """Register now if the harness's registry is imported, else when it is (see the module
    docstring). Called by ``import layerfast``; cheap either way."""
    if REGISTRY_MODULE in sys.modules:
        _register_quietly()
    elif not any(isinstance(f, _RegistryFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegistryFinder())


def _register_quietly() -> None:
    try:
        register()
    except Exception as e:  # never break the harness's own import over our name
        warnings.warn(
            f"layerfast could not register itself with lm-evaluation-harness: {e!r}; "
            "call layerfast.harness.register() to see the error",
            RuntimeWarning,
            stacklevel=2,
        )


class _RegistryFinder:
    """A ``sys.meta_path`` finder that only watches for :data:`REGISTRY_MODULE`: it asks the
    finders after it for the module's spec and wraps the loader so that :func:`register` runs
    once the module has executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname != REGISTRY_MODULE:
            return None
        finders = sys.meta_path
        after = finders[finders.index(self) + 1 :] if self in finders else finders
        for finder in after:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _RegisteringLoader(spec.loader, self)
        return spec


class _RegisteringLoader:
    """Delegates to the real loader; after ``exec_module`` registers and retires the finder."""

    def __init__(self, loader, finder: _RegistryFinder):
        self._loader, self._finder = loader, finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        _register_quietly()

    def __getattr__(self, name):  # get_source, get_filename, is_package, ...
        return getattr(self._loader, name)
