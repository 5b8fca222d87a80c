"""`full`: every backbone weight trains (at finetune.full_learning_rate), the reference."""

from pathlib import Path

from copra.methods.base import Method
from copra.methods.registry import register

WEIGHTS_FILE = "backbone.safetensors"


@register
class Full(Method):
    name = "full"
    description = "full fine-tuning of the backbone (finetune.full_learning_rate)"
    weight_files = (WEIGHTS_FILE,)

    def adapt(self, network, backbone_id: str):
        network.requires_grad_(True)
        return network

    def body_learning_rate(self, settings) -> float:
        return settings.full_learning_rate

    def save(self, network, out_dir) -> None:
        from safetensors.torch import save_model

        from copra.atomic import atomic_path

        with atomic_path(Path(out_dir) / WEIGHTS_FILE) as tmp:
            save_model(network, str(tmp))

    def load(self, network, run_folder):
        from safetensors.torch import load_model

        load_model(network, str(Path(run_folder) / WEIGHTS_FILE))
        return network
