"""Pruning by search (a side path beside the estimators): which sublayers or blocks to drop,
found by greedy or beam search over coalitions of a Game (:func:`prune_search`). The pruned
model (:func:`pruned_model`) is made by :mod:`layerfast.models.pruning`."""

from .result import SearchResult, Step
from .search import METHODS, prune_search, pruned_model

__all__ = ["METHODS", "SearchResult", "Step", "prune_search", "pruned_model"]
