"""Adaptive rank through peft's AdaLoRA: the adapter, its schedule in real optimizer steps, the
orthogonality loss, and rank allocators that record every allocation (Lingo's adds random draws).

peft's `AdaLoraModel.update_and_allocate` runs after every optimizer step; its `RankAllocator`
scores triplets and masks E to the budget. The allocators here subclass it: `mask_to_budget`
calls peft's, then records it (and Lingo resamples it). Without a task type peft's forward skips
AdaLoRA's orthogonality term (peft #432), so training adds `orthogonality_loss` itself.
"""

from pathlib import Path

import pandas as pd
import torch
from peft import AdaLoraConfig, get_peft_model
from peft.tuners.adalora import RankAllocator

from copra.errors import InputError
from copra.lora import check_adapter_settings

ADAPTER = "default"
ALLOCATION_COLUMNS = [
    "step",
    "module",
    "layer",
    "type",
    "kept",
    "budget",
    "reintroduced",
    "dropped",
]


def add_adalora(network, settings, backbone_id: str):
    """`network` wrapped by peft's AdaLoRA at rank `init_r`; the schedule is set by `RankBudget`
    once the run's number of optimizer steps is known."""
    check_adapter_settings(network, settings, settings.init_r, "adalora", "init_r")
    if not 1 <= settings.target_r <= settings.init_r:
        raise InputError(
            f"adalora.target_r {settings.target_r} must be from 1 to adalora.init_r "
            f"({settings.init_r}): the budget only falls"
        )
    config = AdaLoraConfig(
        init_r=settings.init_r,
        target_r=settings.target_r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        layers_to_transform=settings.layers_to_transform,
        layers_pattern="layers" if settings.layers_to_transform is not None else None,
        beta1=settings.beta1,
        beta2=settings.beta2,
        orth_reg_weight=settings.orth_reg_weight,
        total_step=2,  # a placeholder peft requires; RankBudget sets the run's own
    )
    network.name_or_path = backbone_id
    return get_peft_model(network, config)


def steps_of(value: float, total_steps: int) -> int:
    """A schedule key's value in steps: below 1 a fraction of `total_steps`, else steps."""
    return round(value * total_steps) if value < 1 else round(value)


def schedule(settings, total_steps: int) -> dict[str, int]:
    """tinit, tfinal and deltaT in optimizer steps, refused where peft's schedule breaks."""
    tinit, tfinal = steps_of(settings.tinit, total_steps), steps_of(settings.tfinal, total_steps)
    delta_t = max(1, steps_of(settings.delta_t, total_steps))
    hint = "(values below 1 are fractions of the run's steps)"
    if tfinal < 1:
        raise InputError(
            f"adalora.tfinal {settings.tfinal} is 0 of the run's {total_steps} optimizer steps: "
            f"the final budget is fixed at step total - tfinal, so it needs at least 1 {hint}"
        )
    if tinit >= total_steps - tfinal:
        raise InputError(
            f"adalora.tinit ({tinit} steps) must be below the run's {total_steps} optimizer "
            f"steps minus adalora.tfinal ({tfinal} steps), so that the budget can fall between "
            f"them: lower adalora.tinit or adalora.tfinal {hint}, or train longer "
            "(finetune.max_epochs)"
        )
    return {"total_step": total_steps, "tinit": tinit, "tfinal": tfinal, "deltaT": delta_t}


def orthogonality_penalty(network, adapter: str = ADAPTER) -> torch.Tensor:
    """mean over the adapter's A and B of ||A A^T - I||_F and ||B^T B - I||_F (AdaLoRA's R)."""
    terms = []
    for name, weight in network.named_parameters():
        if f"lora_A.{adapter}" in name or f"lora_B.{adapter}" in name:
            gram = weight @ weight.T if "lora_A" in name else weight.T @ weight
            eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
            terms.append(torch.linalg.matrix_norm(gram - eye))
    return torch.stack(terms).mean()


def module_of(parameter: str) -> str:
    """`layers.0.self_attn.k_proj.lora_E.default` -> `layers.0.self_attn.k_proj`."""
    return parameter.split(".lora_E")[0]


class RecordingAllocator(RankAllocator):
    """peft's allocator, recording each mask event: per module its kept triplets and the budget
    (and how many triplets `resample` reintroduced or dropped)."""

    def __init__(self, model, peft_config, adapter_name):
        super().__init__(model, peft_config, adapter_name)
        self.events, self.step, self.mask_events = [], None, 0

    def update_and_allocate(self, model, global_step, force_mask=False):
        self.step = global_step
        return super().update_and_allocate(model, global_step, force_mask)

    def mask_to_budget(self, model, budget):
        pattern = super().mask_to_budget(model, budget)
        pattern, reintroduced, dropped = self.resample(model, pattern)
        self.mask_events += 1
        for name, kept in pattern.items():
            module = module_of(name)
            parts = module.split(".")
            counts = (reintroduced.get(name, 0), dropped.get(name, 0))
            row = [self.step, module, int(parts[1]), parts[-1], sum(kept), budget, *counts]
            self.events.append(row)
        return pattern

    def resample(self, model, pattern):
        """AdaLoRA keeps peft's pattern: (pattern, reintroduced, dropped per module)."""
        return pattern, {}, {}

    def state_dict(self) -> dict:
        return {
            "scores": [self.ipt, self.exp_avg_ipt, self.exp_avg_unc],
            "events": self.events,
            "mask_events": self.mask_events,
        }

    def load_state_dict(self, state: dict) -> None:
        self.ipt, self.exp_avg_ipt, self.exp_avg_unc = state["scores"]
        self.events, self.mask_events = [list(row) for row in state["events"]], state["mask_events"]


def lingo_pruned(below, u, v, p_keep: float, p_drop: float) -> torch.Tensor:
    """Lingo's mask: a below-threshold triplet is pruned unless u < p_keep, an important one
    is pruned when v < p_drop."""
    return (below & (u >= p_keep)) | (~below & (v < p_drop))


class LingoAllocator(RecordingAllocator):
    """Lingo's change to AdaLoRA: at every `allocate_every`-th mask event each triplet draws u
    and v from a generator of its own; reintroduced triplets restart from E = 0."""

    def __init__(self, model, peft_config, adapter_name, *, settings, seed: int):
        super().__init__(model, peft_config, adapter_name)
        self.settings = settings
        self.generator = torch.Generator().manual_seed(seed)

    def resample(self, model, pattern):
        if self.mask_events % self.settings.allocate_every:
            return pattern, {}, {}
        names = list(pattern)
        below = ~torch.tensor([kept for name in names for kept in pattern[name]])
        u = torch.rand(len(below), generator=self.generator)
        v = torch.rand(len(below), generator=self.generator)
        pruned = lingo_pruned(below, u, v, self.settings.p_keep, self.settings.p_drop)
        sizes = [len(pattern[name]) for name in names]
        parameters = dict(model.named_parameters())
        resampled, reintroduced, dropped = {}, {}, {}
        for name, cut, low in zip(names, pruned.split(sizes), below.split(sizes), strict=True):
            with torch.no_grad():
                parameters[name].masked_fill_(cut.view(-1, 1).to(parameters[name].device), 0.0)
            resampled[name] = (~cut).tolist()
            reintroduced[name] = int((low & ~cut).sum())
            dropped[name] = int((~low & cut).sum())
        return resampled, reintroduced, dropped

    def state_dict(self) -> dict:
        return {**super().state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])


class RankBudget:
    """One run's rank budget: peft's schedule in the run's steps, its allocator, the
    orthogonality loss, and the final pattern applied as the saved adapter will have it."""

    def __init__(self, peft_model, settings, total_steps: int, allocator):
        self.tuner, self.settings = peft_model.base_model, settings
        self.config = self.tuner.peft_config[ADAPTER]
        for key, value in schedule(settings, total_steps).items():
            setattr(self.config, key, value)
        self.tuner.rankallocator = allocator(self.tuner.model, self.config, ADAPTER)
        self.parameters_at_start = self.adapter_parameters()

    @property
    def allocator(self) -> RecordingAllocator:
        return self.tuner.rankallocator

    @property
    def final_step(self) -> int:
        """The step whose allocation fixes the rank pattern (peft: total_step - tfinal)."""
        return self.config.total_step - self.config.tfinal

    def allocate(self, step: int) -> None:
        self.tuner.update_and_allocate(step)

    def settled(self, steps_done: int) -> bool:
        return steps_done > self.final_step

    def orthogonality_loss(self):
        weight = self.settings.orth_reg_weight
        return weight * orthogonality_penalty(self.tuner.model) if weight else None

    def finalize(self) -> None:
        """Shrink every module to its kept triplets, as peft saves and reloads it (the best
        epoch ends after the final allocation: `settled`)."""
        self.tuner.resize_modules_by_rank_pattern(self.config.rank_pattern, ADAPTER)

    def adapter_parameters(self) -> int:
        return sum(p.numel() for n, p in self.tuner.model.named_parameters() if ".lora_" in n)

    def final_ranks(self) -> dict[str, int]:
        return {module_of(n): sum(kept) for n, kept in self.config.rank_pattern.items()}

    def state_dict(self) -> dict:
        return {"allocator": self.allocator.state_dict(), "rank_pattern": self.config.rank_pattern}

    def load_state_dict(self, state: dict) -> None:
        self.allocator.load_state_dict(state["allocator"])
        self.config.rank_pattern = state["rank_pattern"]

    def record(self) -> dict:
        """The manifest's record: schedule, budget, kept triplets per module."""
        ranks = self.final_ranks()
        steps = {k: getattr(self.config, k) for k in ("total_step", "tinit", "tfinal", "deltaT")}
        return {
            "rank_schedule": steps,
            "budget_triplets": self.config.target_r * len(ranks),
            "kept_triplets": sum(ranks.values()),
            "final_ranks": ranks,
            "adapter_parameters_at_start": self.parameters_at_start,
            "adapter_parameters": self.adapter_parameters(),
        }

    def write_allocation(self, out_dir) -> None:
        from copra.atomic import write_table

        table = pd.DataFrame(self.allocator.events, columns=ALLOCATION_COLUMNS)
        write_table(Path(out_dir) / "rank_allocation.tsv", table)
