"""Dry run only: make this Python look like the GPU machine's, which lacks these packages.

``benchmarks/gpu/run.sh --dry-run`` puts this folder first on PYTHONPATH, so Python imports this
file at start-up. It hides the packages the GPU image does not have from the import system (as
if they were not installed: ``importlib.util.find_spec`` returns None), so a dependency of the
suite on any of them fails the dry run in CI instead of the GPU run.
"""

import importlib.machinery
import sys

MISSING = {"scipy", "matplotlib", "gguf", "lm_eval", "shapiq", "ray", "sklearn", "pandas"}


class _HidingPathFinder:
    """``PathFinder`` that does not see the top-level packages in MISSING."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in MISSING:
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)

    @classmethod
    def find_distributions(cls, *args, **kwargs):  # importlib.metadata asks the finders too
        return importlib.machinery.PathFinder.find_distributions(*args, **kwargs)

    @classmethod
    def invalidate_caches(cls):
        importlib.machinery.PathFinder.invalidate_caches()


sys.meta_path[:] = [
    _HidingPathFinder if f is importlib.machinery.PathFinder else f for f in sys.meta_path
]
