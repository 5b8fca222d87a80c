"""`copra`: LoRA with CopRA's progressive random layer dropping (copra/layer_drop.py).

Before every optimizer step each block's adapters are switched on with a probability rising to 1;
evaluation runs every block. The schedule it followed goes to layer_drop.tsv and the manifest.
"""

from pathlib import Path

from copra.methods.lora import Lora
from copra.methods.registry import register
from copra.settings import settings


@settings("layer_drop")
class LayerDropSettings:
    p0: float
    stage1_fraction: float
    schedule: str


@register
class LayerDropLora(Lora):
    name = "copra"
    description = "LoRA with progressive random layer dropping (lora.*, layer_drop.*)"
    sections = {**Lora.sections, "layer_drop": LayerDropSettings}
    compared_with = "lora"
    dropper = None

    def start(self, model, total_steps: int, seed: int) -> None:
        from copra.layer_drop import LayerDropper
        from copra.lora import lora_layers_by_block

        blocks = lora_layers_by_block(model)
        self.dropper = LayerDropper(blocks, total_steps, self.layer_drop, seed)

    def before_step(self, step: int) -> None:
        self.dropper.draw(step)

    def before_evaluation(self) -> None:
        self.dropper.activate_all()

    def state_dict(self):
        return self.dropper.state_dict()

    def load_state_dict(self, state) -> None:
        self.dropper.load_state_dict(state)

    def activation_counts(self) -> dict[str, int]:
        return {str(block): count for block, count in self.dropper.active_counts.items()}

    def manifest(self, model) -> dict:
        return {**super().manifest(model), "layer_activation_counts": self.activation_counts()}

    def write_records(self, out_dir) -> None:
        import pandas as pd

        from copra.atomic import write_table

        columns = ["step", "p_active", "active_layers"]
        history = pd.DataFrame(self.dropper.history, columns=columns)
        write_table(Path(out_dir) / "layer_drop.tsv", history)
