"""Contrastive fine-tuning of chosen decoder blocks (all other parameters frozen).

Loss per item, on the request of its gold choice (context + gold continuation, tokenised as the
harness does):

* next-token loss: mean negative log-likelihood of the gold continuation's tokens;
* contrastive term (InfoNCE over the item's choices): h = the final hidden state (after the final
  norm) at the position that predicts the answer's first token; e_j = the mean of the output
  embedding rows of choice j's tokens; loss = -log softmax_j(cos(h, e_j) / temperature)[gold].
  It pulls h toward the gold continuation's output directions and pushes it from the wrong
  choices'.

total = nll + weight * infonce, averaged over a batch of items drawn with a seeded generator.

A generative task is trained as the multiple-choice task of its first target against the model's
own wrong answer (:func:`.generative.contrastive_task`); an item with one choice (answered right)
adds its NLL and an InfoNCE term of 0.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..models import SublayerModel, load
from ..models.inputs import pad_right
from ..progress import progress as progress_bar
from ..tasks import Task


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 100
    batch_size: int = 8
    lr: float = 5e-5
    weight: float = 1.0  # of the contrastive term
    temperature: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0 or self.temperature <= 0:
            raise UsageError(
                f"invalid fine-tuning config {self}: steps must be >= 0, "
                "batch_size >= 1, lr and temperature > 0"
            )


def trainable_parameters(model: SublayerModel, blocks: Sequence[int]) -> list[torch.nn.Parameter]:
    """Unfreeze exactly the parameters of ``blocks`` (decoder layers); freeze everything else."""
    layers = model.adapter.layers()
    bad = [b for b in blocks if not 0 <= b < len(layers)]
    if bad or not len(blocks):
        raise UsageError(
            f"blocks must be a non-empty subset of 0..{len(layers) - 1}, got {list(blocks)}"
        )
    for p in model.hf_model.parameters():
        p.requires_grad_(False)
    params = []
    for b in sorted(set(blocks)):
        for p in layers[b].parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def finetune(
    model: SublayerModel,
    train: Task,
    blocks: Sequence[int],
    config: FinetuneConfig = FinetuneConfig(),
    progress: bool = False,
) -> tuple[SublayerModel, list[dict]]:
    """Fine-tune a deep copy of ``model`` (the original is untouched); returns it (in eval mode)
    and the per-step losses."""
    tuned = load(copy.deepcopy(model.hf_model), tokenizer=model.tokenizer)
    hf = tuned.hf_model
    params = trainable_parameters(tuned, blocks)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    requests = train.requests(model.tokenizer)
    by_item: dict[int, list] = {}
    for r in requests:
        by_item.setdefault(r.group, []).append(r)
    gold = [it.gold for it in train.items]
    out_emb = hf.get_output_embeddings().weight  # [V, d]
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    hf.eval()  # no dropout: the comparison between layer choices should not depend on it
    log = []
    steps = progress_bar(
        range(config.steps), desc=f"fine-tune blocks {list(blocks)}", unit="step", enabled=progress
    )
    for step in steps:
        items = rng.choice(len(train), size=min(config.batch_size, len(train)), replace=False)
        nll, nce = batch_loss(
            tuned,
            [by_item[i] for i in items],
            [gold[i] for i in items],
            out_emb,
            config.temperature,
        )
        loss = nll + config.weight * nce
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        log.append({"step": step, "loss": loss.item(), "nll": nll.item(), "infonce": nce.item()})
    for p in hf.parameters():
        p.requires_grad_(False)
    hf.config.layerfast_finetuned = {"blocks": sorted(set(blocks)), **asdict(config)}
    return tuned, log


def batch_loss(
    model: SublayerModel,
    item_requests: list[list],
    gold: list[int],
    out_emb: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean NLL of the gold continuations, mean InfoNCE over choices) for a batch of items."""
    gold_reqs = [reqs[g] for reqs, g in zip(item_requests, gold, strict=True)]
    ids, mask = pad_right([list(r.input_ids) for r in gold_reqs])  # [B, T]
    ids, mask = ids.to(model.device), mask.to(model.device)
    hidden = model.hf_model.base_model(
        input_ids=ids, attention_mask=mask, use_cache=False
    ).last_hidden_state  # [B, T, d]
    head = model.hf_model.get_output_embeddings()
    nlls, nces = [], []
    for row, (r, reqs, g) in enumerate(zip(gold_reqs, item_requests, gold, strict=True)):
        length, n_target = len(r.input_ids), len(r.targets)
        h = hidden[row, length - n_target : length]  # [C, d] positions predicting the answer
        logp = F.log_softmax(head(h).float(), dim=-1)  # [C, V]
        targets = torch.tensor(r.targets, device=h.device)
        nlls.append(-logp.gather(1, targets[:, None]).mean())
        choices = torch.stack(
            [out_emb[torch.tensor(c.targets, device=h.device)].mean(0) for c in reqs]
        )  # [n_choices, d]
        sim = F.cosine_similarity(h[0][None].float(), choices.float(), dim=-1) / temperature
        nces.append(F.cross_entropy(sim[None], torch.tensor([g], device=h.device)))
    return torch.stack(nlls).mean(), torch.stack(nces).mean()
