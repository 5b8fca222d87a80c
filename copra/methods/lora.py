"""`lora`: LoRA adapters through peft on ESM-2's attention and feed-forward layers.

Only the adapters (and the task head) train; the adapter is saved in peft's format.
The peft wrapping itself is in copra/lora.py.
"""

from pathlib import Path

from copra.methods.base import Method
from copra.methods.registry import register
from copra.settings import settings

ADAPTER_FOLDER = "adapter"


@settings("lora")
class LoraSettings:
    target_modules: list[str]
    rank: int
    alpha: float
    dropout: float
    layers_to_transform: list[int] | None


@register
class Lora(Method):
    name = "lora"
    description = "LoRA adapters through peft (lora.*)"
    sections = {"lora": LoraSettings}
    adapter = fixed_rank = complex_tasks = True
    weight_files = (
        f"{ADAPTER_FOLDER}/adapter_config.json",
        f"{ADAPTER_FOLDER}/adapter_model.safetensors",
    )

    def adapt(self, network, backbone_id: str):
        from copra.lora import add_lora

        return add_lora(network, self.lora, backbone_id)

    def save(self, network, out_dir) -> None:
        from copra.atomic import atomic_directory

        with atomic_directory(Path(out_dir) / ADAPTER_FOLDER) as tmp:
            # No embedding layers are adapted; False also skips peft's hub query about them.
            network.save_pretrained(str(tmp), save_embedding_layers=False)

    def load(self, network, run_folder):
        from peft import PeftModel

        return PeftModel.from_pretrained(network, str(Path(run_folder) / ADAPTER_FOLDER))

    def manifest(self, model) -> dict:
        from copra.lora import wrapped_module_names

        return {**super().manifest(model), "wrapped_modules": wrapped_module_names(model)}
