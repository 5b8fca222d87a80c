"""A trained run folder (results/<task>/<method>/seed<k>/) and models rebuilt from its parts."""

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file

from copra.errors import InputError
from copra.protein_model import ProteinModel
from copra.tables import PAIR_KIND
from copra.targets import Targets


@dataclass(frozen=True)
class TrainedRun:
    folder: Path
    manifest: dict
    targets: Targets

    @classmethod
    def open(cls, folder) -> "TrainedRun":
        folder = Path(folder)
        for name in ("manifest.json", "targets.json", "head.safetensors"):
            if not (folder / name).is_file():
                raise InputError(f"not a trained run: {name} is missing", path=folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        return cls(folder, manifest, Targets.from_json((folder / "targets.json").read_text()))

    @property
    def adapter_folder(self) -> Path:
        return self.folder / "adapter"

    def check_backbone(self, backbone) -> None:
        expected = self.manifest["backbone"]
        if [expected["name"], expected["weights"]] != [backbone.name, backbone.weights_id]:
            raise InputError(
                f"was trained on {expected['name']} ({expected['weights']}), not on "
                f"{backbone.name} ({backbone.weights_id})",
                path=self.folder,
            )

    def head_state(self) -> dict:
        return load_file(str(self.folder / "head.safetensors"))

    def model(self, network, backbone, head_state: dict | None = None) -> ProteinModel:
        """`network` (the backbone, adapted or not) under this run's head (or `head_state`)."""
        head = self.manifest["head"]
        pair = head["pair_combination"] if self.manifest["kind"] == PAIR_KIND else None
        sizes = (backbone.num_layers, backbone.embed_dim, self.targets.out_dim)
        model = ProteinModel(
            network, backbone.alphabet, *sizes, head["hidden"], head["dropout"], pair
        )
        model.head.load_state_dict(head_state if head_state is not None else self.head_state())
        return model
