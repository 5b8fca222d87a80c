"""`adalora` and `lingo`: adaptive-rank adapters over peft's AdaLoRA (copra/adaptive_rank.py).

Every module starts at rank `init_r`; peft's rank allocator prunes the least important singular
triplets to a total budget of `target_r` per module, on a cubic schedule between `tinit` and
`total steps - tfinal`. Lingo (`lingo`) keeps a below-threshold triplet with probability `p_keep`
and prunes an important one with probability `p_drop` at its mask events. The rank pattern is
final once the budget is reached: the best epoch is chosen, and early stopping may stop, only
among the epochs after that. The allocation each run followed goes to rank_allocation.tsv.
"""

from copra.methods.lora import Lora
from copra.methods.registry import register
from copra.settings import settings


@settings("adalora")
class AdaLoraSettings:
    target_modules: list[str]
    init_r: int
    target_r: int
    alpha: float
    dropout: float
    layers_to_transform: list[int] | None
    tinit: float
    tfinal: float
    delta_t: float
    beta1: float
    beta2: float
    orth_reg_weight: float


@settings("lingo")
class LingoSettings:
    p_keep: float
    p_drop: float
    allocate_every: int


@register
class AdaLora(Lora):
    name = "adalora"
    description = "AdaLoRA through peft: importance-driven rank budget (adalora.*)"
    sections = {"adalora": AdaLoraSettings}
    fixed_rank = complex_tasks = False
    compared_with = "lora"
    budget = None  # per run: copra.adaptive_rank.RankBudget

    def adapt(self, network, backbone_id: str):
        from copra.adaptive_rank import add_adalora

        return add_adalora(network, self.adalora, backbone_id)

    def allocator(self, seed: int):
        """The rank allocator of a run (Lingo: one with its own seeded draws)."""
        from copra.adaptive_rank import RecordingAllocator

        return RecordingAllocator

    def start(self, model, total_steps: int, seed: int) -> None:
        from copra.adaptive_rank import RankBudget

        self.budget = RankBudget(model.backbone, self.adalora, total_steps, self.allocator(seed))

    def extra_loss(self):
        return self.budget.orthogonality_loss()

    def after_step(self, step: int) -> None:
        self.budget.allocate(step)

    def settled(self, steps_done: int) -> bool:
        return self.budget.settled(steps_done)

    def finalize(self, model) -> None:
        self.budget.finalize()

    def state_dict(self):
        return self.budget.state_dict()

    def load_state_dict(self, state) -> None:
        self.budget.load_state_dict(state)

    def manifest(self, model) -> dict:
        return {**super().manifest(model), **self.budget.record()}

    def write_records(self, out_dir) -> None:
        self.budget.write_allocation(out_dir)


@register
class Lingo(AdaLora):
    name = "lingo"
    description = "Lingo: AdaLoRA with random reintroduction and pruning of triplets (lingo.*)"
    sections = {**AdaLora.sections, "lingo": LingoSettings}
    compared_with = "adalora"

    def allocator(self, seed: int):
        import functools

        from copra.adaptive_rank import LingoAllocator

        return functools.partial(LingoAllocator, settings=self.lingo, seed=seed)
