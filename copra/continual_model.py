"""The parts of a continual learner's model: one head per class-incremental step, LAE's offline
expert as a second peft adapter that follows the online one (EMA), the online PET frozen while a
new head calibrates, and raw outputs of either expert on ingested rows."""

import contextlib

import numpy as np
import torch
from torch import nn

from copra.inference import HeadScorer, NetworkEncoder
from copra.methods.base import Method
from copra.tables import hash_columns
from copra.task_head import TaskHead

ONLINE, OFFLINE = "default", "offline"  # peft's adapter names of LAE's two experts


class StepHeads(nn.Module):
    """One TaskHead per class-incremental step: the logits of every step's classes, concatenated;
    while step `only` trains, the logits of its new classes alone (LAE's loss)."""

    def __init__(self, first: TaskHead):
        super().__init__()
        self.heads = nn.ModuleList([first])
        self.only: int | None = None

    def add(self, out_dim: int) -> None:
        """A new head for the next step; the earlier ones stop training."""
        first, last = self.heads[0].layers[1], self.heads[0].layers[4]
        dropout = self.heads[0].layers[0].p
        head = TaskHead(first.in_features, out_dim, first.out_features, dropout)
        head.to(last.weight.device)
        for old in self.heads:
            old.requires_grad_(False)
        self.heads.append(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.only is not None:
            return self.heads[self.only](x)
        return torch.cat([head(x) for head in self.heads], dim=-1)

    def merged(self) -> TaskHead:
        """The same function as one TaskHead (hidden units side by side, the output layer block
        diagonal): what a step's run folder saves, so `copra predict` reads it as any head."""
        heads = [head.layers for head in self.heads]
        hidden = sum(h[1].out_features for h in heads)
        out = sum(h[4].out_features for h in heads)
        merged = TaskHead(heads[0][1].in_features, out, hidden, heads[0][0].p)
        with torch.no_grad():
            merged.layers[1].weight.copy_(torch.cat([h[1].weight for h in heads]))
            merged.layers[1].bias.copy_(torch.cat([h[1].bias for h in heads]))
            merged.layers[4].weight.copy_(torch.block_diag(*[h[4].weight for h in heads]))
            merged.layers[4].bias.copy_(torch.cat([h[4].bias for h in heads]))
        return merged.to(heads[0][1].weight.device)


def single_head(model) -> TaskHead:
    head = model.head
    return head.merged() if isinstance(head, StepHeads) else head


# --- LAE's two experts in one peft model ---------------------------------------------------------


def offline_pairs(model) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
    """(offline, online) parameter pairs of the adapters (LoRA A and B of every module)."""
    params = dict(model.named_parameters())
    marker = f".{ONLINE}."
    return [
        (params[name.replace(marker, f".{OFFLINE}.")], param)
        for name, param in params.items()
        if ".lora_" in name and marker in name
    ]


def offline_names(model) -> list[str]:
    return [n for n, _ in model.named_parameters() if ".lora_" in n and f".{OFFLINE}." in n]


def add_offline_expert(model) -> None:
    """The offline PET: a second adapter of the same config, starting as a copy of the online
    one (the global RNG is left as it was: the new adapter's own init is overwritten)."""
    network = model.backbone
    with torch.random.fork_rng(devices=[]):
        network.add_adapter(OFFLINE, network.peft_config[ONLINE])
    network.set_adapter(ONLINE)
    with torch.no_grad():
        for offline, online in offline_pairs(model):
            offline.copy_(online)


@contextlib.contextmanager
def expert(model, name: str):
    """The model with adapter `name` active (inference mode), the online one active after."""
    if name == ONLINE:
        yield model
        return
    model.backbone.set_adapter(name, inference_mode=True)
    try:
        yield model
    finally:
        model.backbone.set_adapter(ONLINE)


class Ema:
    """theta_off <- d theta_off + (1 - d) theta_on over the adapters' parameters."""

    def __init__(self, model, decay: float):
        self.pairs, self.decay = offline_pairs(model), decay

    @torch.no_grad()
    def update(self) -> None:
        for offline, online in self.pairs:
            offline.mul_(self.decay).add_(online, alpha=1.0 - self.decay)


def set_online_trainable(model, trainable: bool) -> None:
    for name, param in model.named_parameters():
        if ".lora_" in name and f".{ONLINE}." in name:
            param.requires_grad_(trainable)


class StepPolicy(Method):
    """The PET method's hooks in one step, with LAE's around them: the online PET frozen for the
    first `frozen_steps` optimizer steps (the epochs chosen as best come after them), and the
    offline expert following it after every optimizer step (`ema`)."""

    name = "continual-step"

    def __init__(self, pet: Method, frozen_steps: int = 0, ema: Ema | None = None):
        self.pet, self.frozen_steps, self.ema = pet, frozen_steps, ema
        self.model = None

    def fresh(self) -> "StepPolicy":
        return StepPolicy(self.pet.fresh(), self.frozen_steps, self.ema)

    def settings_record(self) -> dict:
        return self.pet.settings_record()

    def body_learning_rate(self, settings) -> float:
        return self.pet.body_learning_rate(settings)

    def parameter_groups(self, model, settings) -> list[dict]:
        return self.pet.parameter_groups(model, settings)

    def start(self, model, total_steps: int, seed: int) -> None:
        self.model = model
        self.pet.start(model, total_steps, seed)

    def before_step(self, step: int) -> None:
        if self.frozen_steps and step == self.frozen_steps:
            set_online_trainable(self.model, True)
        self.pet.before_step(step)  # CopRA switches blocks: it has the last word when unfrozen
        if step < self.frozen_steps:
            set_online_trainable(self.model, False)

    def extra_loss(self):
        return self.pet.extra_loss()

    def after_backward(self, step: int) -> None:
        self.pet.after_backward(step)

    def after_step(self, step: int) -> None:
        self.pet.after_step(step)
        if self.ema is not None:
            self.ema.update()

    def before_evaluation(self) -> None:
        self.pet.before_evaluation()

    def settled(self, steps_done: int) -> bool:
        return steps_done > self.frozen_steps and self.pet.settled(steps_done)

    def finalize(self, model) -> None:
        self.pet.finalize(model)

    def state_dict(self):
        return self.pet.state_dict()

    def load_state_dict(self, state) -> None:
        self.pet.load_state_dict(state)


class RawOutputs:
    """What HeadScorer needs of targets, giving the head's raw outputs (float64) as scores."""

    def __init__(self, columns: int):
        self.columns = columns

    def scores(self, outputs: torch.Tensor) -> np.ndarray:
        return outputs.detach().cpu().double().numpy()

    def score_columns(self) -> list[str]:
        return [str(i) for i in range(self.columns)]


def raw_outputs(model, head: TaskHead, tables: list, settings) -> np.ndarray:
    """The head's raw outputs (float64) on the rows of every (table, sequences, kind) of
    `tables`, one below the other, computed as a run's predictions.tsv is (copra/inference.py)."""
    budget = settings.eval_batch_size * (settings.max_residues + 2)
    device = next(model.parameters()).device
    encoder = NetworkEncoder(model, settings.max_residues, device, budget)
    scorer = HeadScorer(head, RawOutputs(head.layers[4].out_features), model.pair_combination)
    parts = []
    for table, sequences, kind in tables:
        columns = hash_columns(kind)
        vectors = encoder({key: sequences[key] for c in columns for key in table[c]})
        parts.append(scorer.rows(vectors, *(table[c].tolist() for c in columns)))
    return np.concatenate(parts)
