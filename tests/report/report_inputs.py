"""Fixed inputs of the report writers (an ablation and a Shapley result on 4 players, with and
without the item bootstrap; a 2 x 2 multi report) and the ``report.md`` texts the Markdown writers
before the document model wrote for them, byte for byte."""

from __future__ import annotations

import numpy as np

from layerfast.estimators.ablation import AblationResult
from layerfast.estimators.result import ShapleyResult

PLAYERS = ["attn0", "mlp0", "attn1", "mlp1"]
VALUES = np.array([0.7, 0.25, 0.8, 0.5])
BOOT_FULL = np.array([0.8, 0.78, 0.82, 0.79, 0.81])
BOOT_VALUES = np.array(
    [
        [0.7, 0.25, 0.8, 0.5],
        [0.68, 0.27, 0.79, 0.52],
        [0.72, 0.22, 0.81, 0.48],
        [0.69, 0.26, 0.8, 0.5],
        [0.71, 0.24, 0.79, 0.51],
    ]
)
RANKS = np.array([[0, 1, 3, 1], [5, 0, 0, 0], [0, 0, 1, 4], [0, 4, 1, 0]])


def ablation_result(boot=True, full=0.8, p_drop=None, n_items=6):
    return AblationResult(
        players=list(PLAYERS),
        full=full,
        values=VALUES.copy(),
        chance=0.25,
        margin=0.1,
        utility="acc",
        info={} if n_items is None else {"n_items": n_items},
        p_drop=p_drop,
        boot_full=BOOT_FULL if boot else None,
        boot_values=BOOT_VALUES if boot else None,
    )


def shapley_result(boot=True, values=(0.1, 0.5, 0.0, 0.2)):
    return ShapleyResult(
        values=np.array(values),
        stderr=np.array([0.01, 0.02, 0.0, 0.03]),
        n_evaluations=8,
        method="proximity",
        players=list(PLAYERS),
        full=0.8,
        info={"window": 2, **({"item_bootstrap": {"replicates": 5}} if boot else {})},
        stderr_items=np.array([0.02, 0.1, 0.001, 0.05]) if boot else None,
        item_rank_counts=RANKS if boot else None,
    )


META = {
    "model": "m<1>",
    "task": "t & u",
    "n_items": 6,
    "dtype": "float32",
    "threads": 2,
    "utility_note": "higher is better",
    "truncation": {"max_length": 128, "limit_source": "config", "n_truncated": 1, "n_requests": 24},
    "environment": {"machine": "x86_64, 2 cores", "date": "2024-01-02"},
}
PROVENANCE = ('made by `layerfast report --task "a<b"`', "with layerfast 1, Python 3; device cpu")
MODELS, TASKS = ["tiny-a", "tiny-b"], ["one", "two"]


def multi_inputs(tasks):
    """Ablations, Shapley results and folders per (model, task): tiny-a with per-item p-values
    and 6 items, tiny-b with neither."""
    ablations, shapleys, folders = {}, {}, {}
    for i, m in enumerate(MODELS):
        for j, t in enumerate(tasks):
            p_drop = np.array([0.5, 0.001, 0.9, 0.02]) if i == 0 else None
            n_items = 6 if i == 0 else None
            ablations[(m, t)] = ablation_result(False, 0.8 - 0.1 * j, p_drop, n_items)
            shapleys[(m, t)] = shapley_result(False, (0.3 * j, 0.5, -0.1, 0.2 + 0.05 * i))
            folders[(m, t)] = f"{m}/{t}"
    return ablations, shapleys, folders


# what the Markdown writers before the document model wrote for these inputs
PAIR_WITH_BOOTSTRAP = r"""
# layerfast report: m<1> on t & u

- made by `layerfast report --task "a<b"`
- with layerfast 1, Python 3; device cpu
- items: 6, utility: acc (higher is better), dtype: float32
- requests up to 128 tokens (config); 1 of 24 left-truncated
- full model v(N) = 0.8000; chance = 0.250; cornerstone margin = 0.100
- cornerstones (removal drops the utility to chance): mlp0
- cornerstone test: cornerstone = removal gives v <= 0.350 < v(N) (exact values, no test)
- Shapley: proximity (window 2), 8 coalitions; efficiency gap not defined for this estimator
- error bars: drops ± the item sample (bootstrap over items, B=5); Shapley ± total = coalition sampling and the item sample (B=5); P(top4) = share of item resamples in which the player is among the top 4
- wall time 12 s on 2 CPU threads; x86_64, 2 cores, 2024-01-02

![ablation](ablation.png)

![shapley](shapley.png)

```
  player  v(N\{l})     drop  ± items   shapley  ± total  P(top4)
----------------------------------------------------------------
   attn0     0.700    0.100    0.000    0.1000   0.0224     1.00
    mlp0     0.250    0.550    0.035    0.5000   0.1020     1.00  <- cornerstone
   attn1     0.800    0.000    0.013    0.0000   0.0010     1.00
    mlp1     0.500    0.300    0.029    0.2000   0.0583     1.00
```

Told from zero at 6 items (95% interval excludes 0), and the items needed for 80% power at 5% (from the bootstrap's item-level error; `budget` where the coalition sampling error alone is too large, so more items cannot help):

| player | drop | drop ≠ 0 | items for drop | Shapley | Shapley ≠ 0 | items for Shapley |
|---|---:|:-:|---:|---:|:-:|---:|
| attn0 | 0.100 | yes | 1 | 0.1000 | yes | 2 |
| mlp0 | 0.550 | yes | 1 | 0.5000 | yes | 2 |
| attn1 | 0.000 | no | never (0) | 0.0000 | no | budget |
| mlp1 | 0.300 | yes | 1 | 0.2000 | yes | 3 |
"""[1:]  # noqa: E501

SUMMARY_WITHOUT_BOOTSTRAP = r"""
# layerfast report: m<1> on t & u

- items: 6, utility: acc (higher is better), dtype: float32
- requests up to 128 tokens (config); 1 of 24 left-truncated
- full model v(N) = 0.8000; chance = 0.250; cornerstone margin = 0.100
- cornerstones (removal drops the utility to chance): mlp0
- cornerstone test: cornerstone = removal gives v <= 0.350 < v(N) (exact values, no test)
- Shapley: proximity (window 2), 8 coalitions; efficiency gap not defined for this estimator
- error bars: coalition sampling only (no item bootstrap)
- wall time 12 s on 2 CPU threads; x86_64, 2 cores, 2024-01-02

![ablation](ablation.png)

![shapley](shapley.png)

```
  player  v(N\{l})     drop   shapley   ± s.e.
----------------------------------------------
   attn0     0.700    0.100    0.1000   0.0100
    mlp0     0.250    0.550    0.5000   0.0200  <- cornerstone
   attn1     0.800    0.000    0.0000   0.0000
    mlp1     0.500    0.300    0.2000   0.0300
```
"""[1:]  # noqa: E501

MULTI_TWO_TASKS = r"""
# layerfast report: 2 model(s) x 2 task(s)

- made by `layerfast report --task "a<b"`
- with layerfast 1, Python 3; device cpu

## Shapley shares

Per sublayer, phi / sum |phi| (proximity estimator, window 3); rows models, columns tasks; each panel's title names its top 4.

![Shapley shares per model and task](grid.svg)

## Per model and task

| model | task | items | full acc | chance | cornerstones (v without it, Holm-adjusted p of the drop) |
|---|---|---:|---:|---:|---|
| tiny-a | one | 6 | 0.800 | 0.250 | mlp0 (v 0.250, p_drop 1.0e-03) |
| tiny-a | two | 6 | 0.700 | 0.250 | mlp0 (v 0.250, p_drop 1.0e-03) |
| tiny-b | one |  | 0.800 | 0.250 | mlp0 (v 0.250) |
| tiny-b | two |  | 0.700 | 0.250 | mlp0 (v 0.250) |

## Rank agreement between tasks

Spearman's rho of the Shapley values over the players, with a 95% interval (Fisher z, standard error sqrt(1.06 / (n - 3))).

| model | task A | task B | rho | 95% interval | p | players |
|---|---|---|---:|---|---:|---:|
| tiny-a | one | two | 0.800 | [-0.726, 0.996] | 2.0e-01 | 4 |
| tiny-b | one | two | 0.800 | [-0.726, 0.996] | 2.0e-01 | 4 |

## Ablation per model and task

### tiny-a on one

![ablation of tiny-a on one](tiny-a/one/ablation.svg)

Full report: `tiny-a/one/report.md`.

### tiny-a on two

![ablation of tiny-a on two](tiny-a/two/ablation.svg)

Full report: `tiny-a/two/report.md`.

### tiny-b on one

![ablation of tiny-b on one](tiny-b/one/ablation.svg)

Full report: `tiny-b/one/report.md`.

### tiny-b on two

![ablation of tiny-b on two](tiny-b/two/ablation.svg)

Full report: `tiny-b/two/report.md`.

"""[1:]  # noqa: E501

MULTI_ONE_TASK = r"""
# layerfast report: 2 model(s) x 1 task(s)

- made by `layerfast report --task "a<b"`
- with layerfast 1, Python 3; device cpu

## Shapley shares

Per sublayer, phi / sum |phi| (proximity estimator, window 3); rows models, columns tasks; each panel's title names its top 4.

![Shapley shares per model and task](grid.svg)

## Per model and task

| model | task | items | full acc | chance | cornerstones (v without it, Holm-adjusted p of the drop) |
|---|---|---:|---:|---:|---|
| tiny-a | one | 6 | 0.800 | 0.250 | mlp0 (v 0.250, p_drop 1.0e-03) |
| tiny-b | one |  | 0.800 | 0.250 | mlp0 (v 0.250) |

## Rank agreement between tasks

One task per model: nothing to compare.

## Ablation per model and task

### tiny-a on one

![ablation of tiny-a on one](tiny-a/one/ablation.svg)

Full report: `tiny-a/one/report.md`.

### tiny-b on one

![ablation of tiny-b on one](tiny-b/one/ablation.svg)

Full report: `tiny-b/one/report.md`.

"""[1:]  # noqa: E501
