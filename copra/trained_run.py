"""A trained run folder (results/<task>/<method>/seed<k>/), the model rebuilt from its parts, and
models built from it scored on its task's splits: where the analyses of trained runs start."""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from copra import methods
from copra.device import pick_device
from copra.errors import InputError
from copra.metrics import loss_and_primary_metric
from copra.protein_model import ProteinModel, task_model
from copra.settings import HeadArchitecture, ModelSettings, from_section
from copra.tables import COMPLEX_KIND
from copra.targets import Targets
from copra.task_data import Batcher, predict, read_splits

SPLITS = ("valid", "test")
SCORING_BATCH_SIZE = 16


@dataclass(frozen=True)
class TrainedRun:
    folder: Path
    manifest: dict
    targets: Targets

    @classmethod
    def open(cls, folder) -> "TrainedRun":
        folder = Path(folder)
        if not (folder / "manifest.json").is_file():
            raise InputError("not a trained run: manifest.json is missing", path=folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        for name in cls.model_files(manifest)[1:]:
            if not (folder / name).is_file():
                raise InputError(
                    f"the run is incomplete: {name} is missing (rerun its training)", path=folder
                )
        return cls(folder, manifest, Targets.from_json((folder / "targets.json").read_text()))

    @staticmethod
    def model_files(manifest: dict) -> list[str]:
        return methods.run_files(manifest["method"], manifest.get("kind") == COMPLEX_KIND)

    def files(self) -> list[Path]:
        """The model's files: what a prediction's manifest checksums."""
        return [self.folder / name for name in self.model_files(self.manifest)]

    @property
    def adapter_folder(self) -> Path:
        return self.folder / "adapter"

    @property
    def method(self):
        """The run's method, with the settings it trained with."""
        return methods.get(self.manifest["method"]).from_manifest(self.manifest)

    @property
    def recorded_backbone(self) -> tuple[str, str]:
        """(name, weights id) of the run's backbone (head runs: that of their embeddings)."""
        recorded = self.manifest.get("embedding") or self.manifest["backbone"]
        return recorded.get("name", recorded.get("model")), recorded["weights"]

    def check_backbone(self, backbone) -> None:
        """Refuse another backbone than the run's (head runs: that of their embeddings)."""
        name, weights = self.recorded_backbone
        if [name, weights] != [backbone.name, backbone.weights_id]:
            raise InputError(
                f"was trained on {name} ({weights}), not on "
                f"{backbone.name} ({backbone.weights_id})",
                path=self.folder,
            )

    def head_state(self) -> dict:
        return load_file(str(self.folder / "head.safetensors"))

    def model(self, network, backbone, head_state: dict | None = None) -> ProteinModel:
        """`network` (the backbone, adapted or not) under this run's head (or `head_state`)."""
        head = from_section(HeadArchitecture, self.manifest["head"])
        model = task_model(network, backbone, self.targets.out_dim, self.manifest["kind"], head)
        model.head.load_state_dict(head_state if head_state is not None else self.head_state())
        return model


def load_finetuned(run_dir, backbone) -> tuple[ProteinModel, Targets]:
    """A trained run as a model again: its method's weights (a peft adapter, or the whole
    backbone) on `backbone`, and its head."""
    run = TrainedRun.open(run_dir)
    run.check_backbone(backbone)
    network = run.method.load(backbone.model, run.folder)
    return run.model(network, backbone), run.targets


def open_runs(folders, analysis: str) -> list[TrainedRun]:
    """The trained runs an analysis reads, each refused unless its method suits the analysis."""
    runs = [TrainedRun.open(folder) for folder in folders]
    for run in runs:
        methods.require(run.manifest["method"], analysis, path=run.folder)
    return runs


def shared_backbone(runs: list[TrainedRun], model: ModelSettings):
    """The backbone `runs` were trained on: loaded once, checked against every run."""
    backbone = model.load()
    for run in runs:
        run.check_backbone(backbone)
    return backbone


class Scorer:
    """A task's splits as a trained run reads them (its label space and truncation), for scoring
    models built from the run: loss and primary metric per split, in float32."""

    def __init__(self, run: TrainedRun, backbone, table_path, sequences_path, splits=SPLITS):
        self.run, self.targets = run, run.targets
        self.data = read_splits(
            table_path, sequences_path, run.manifest["kind"], run.targets, splits
        )
        self.device = pick_device()
        max_residues = run.manifest["settings"]["max_residues"]
        self.batcher = Batcher(backbone.alphabet, self.device, max_residues)

    def outputs(self, model) -> dict[str, torch.Tensor]:
        model.to(self.device)
        return {
            split: predict(model, data, self.batcher, SCORING_BATCH_SIZE, float32=True)
            for split, data in self.data.items()
        }

    def scores(self, outputs: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
        """{split: {"loss": ..., primary metric: ...}} of a model's outputs."""
        scores = {}
        for split, data in self.data.items():
            loss, metric = loss_and_primary_metric(outputs[split], data.targets, self.targets)
            scores[split] = {"loss": loss, self.targets.primary_metric: metric}
        return scores

    def score(self, model) -> dict[str, dict[str, float]]:
        return self.scores(self.outputs(model))
