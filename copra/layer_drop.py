"""Progressive random layer dropping over peft's LoRA layers (method `copra`, copra/methods/).

Each transformer block is one player: per optimizer step, one Bernoulli draw switches all of that
block's LoRA modules on or off. A dropped block returns its base output only, with no rescaling.
"""

import math

import torch

from copra.methods.layer_drop import LayerDropSettings

SCHEDULES = ("linear", "exponential", "sine")
MAX_REDRAWS = 1000


def activation_probability(step: int, total_steps: int, settings: LayerDropSettings) -> float:
    """p(t): from p0 at step 0 to 1 at ceil(stage1_fraction * T), then 1.

    linear: p0 + (1 - p0) r; exponential: p0 (1/p0)^r (p0 > 0); sine: p0 + (1 - p0) sin(pi r / 2),
    with r = t / ceil(stage1_fraction * T) capped at 1.
    """
    ramp = math.ceil(settings.stage1_fraction * total_steps)
    r = 1.0 if ramp <= 0 else min(step / ramp, 1.0)
    p0 = settings.p0
    if settings.schedule == "linear":
        return min(p0 + (1 - p0) * r, 1.0)
    if settings.schedule == "exponential":
        return min(max(p0, 1e-3) ** (1 - r), 1.0)
    if settings.schedule == "sine":
        return min(p0 + (1 - p0) * math.sin(math.pi * r / 2), 1.0)
    raise ValueError(f"layer_drop.schedule {settings.schedule!r} is not one of {SCHEDULES}")


class LayerDropper:
    """Draws the active blocks of each optimizer step and switches their LoRA modules."""

    def __init__(self, blocks: dict, total_steps: int, settings: LayerDropSettings, seed: int):
        self.blocks = blocks
        self.total_steps = total_steps
        self.settings = settings
        self.generator = torch.Generator().manual_seed(seed)
        self.active_counts = dict.fromkeys(blocks, 0)
        self.history: list[tuple[int, float, int]] = []

    def draw(self, step: int) -> list[int]:
        """Activate each block with p(step), at least one; returns the active block indices."""
        p = activation_probability(step, self.total_steps, self.settings)
        names = list(self.blocks)
        for _ in range(MAX_REDRAWS):
            keep = torch.rand(len(names), generator=self.generator) < p
            if keep.any():
                break
        else:  # p is (close to) zero: one block at random
            keep[torch.randint(len(names), (1,), generator=self.generator)] = True
        active = [name for name, on in zip(names, keep.tolist(), strict=True) if on]
        self._switch(set(active))
        for name in active:
            self.active_counts[name] += 1
        self.history.append((step, p, len(active)))
        return active

    def activate_all(self) -> None:
        """Every block on: evaluation always runs the full adapter."""
        self._switch(set(self.blocks))

    def _switch(self, active: set) -> None:
        for name, modules in self.blocks.items():
            for module in modules:
                module.enable_adapters(name in active)

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "active_counts": dict(self.active_counts),
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.active_counts = dict(state["active_counts"])
        self.history = list(state["history"])
