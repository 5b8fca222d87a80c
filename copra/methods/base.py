"""What every training method is: its settings, what analyses may do with its runs, how it builds,
trains (the training loops call its hooks), saves and loads a model. Light: torch and peft are
imported by the methods that use them, when they are called."""

import dataclasses
from typing import ClassVar

from copra.errors import InputError
from copra.settings import from_config


class Method:
    """One run's method: settings per config section, and per-run state once `start`ed.

    The class attributes say what the pipeline and the analyses may do with the method's runs.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    # config section -> settings class (e.g. {"lora": LoraSettings})
    sections: ClassVar[dict[str, type]] = {}
    # it trains a peft adapter, saved as adapter/ (merging, LMC, Shapley values, pruning)
    adapter: ClassVar[bool] = False
    # every adapted module keeps the configured rank (exact aggregation, same-rank merging)
    fixed_rank: ClassVar[bool] = False
    # it trains on cached embeddings of the frozen backbone instead of through it
    cached_embeddings: ClassVar[bool] = False
    # it trains complex_regression tasks too
    complex_tasks: ClassVar[bool] = False
    # the method it refines: the summary puts the two side by side
    compared_with: ClassVar[str | None] = None
    # the files of a run folder that hold its trained backbone part (beside its head)
    weight_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **settings):
        unknown = set(settings) - set(self.sections)
        if unknown:
            raise TypeError(f"method {self.name} has no settings {sorted(unknown)}")
        for section, cls in self.sections.items():
            setattr(self, section, settings.get(section) or cls())

    @classmethod
    def from_config(cls, tree: dict | None = None, given: dict | None = None) -> "Method":
        """The method with its sections' values from a config, then `given` ({section: values})."""
        given = given or {}
        return cls(
            **{
                section: from_config(settings, tree, **given.get(section, {}))
                for section, settings in cls.sections.items()
            }
        )

    @classmethod
    def from_manifest(cls, manifest: dict) -> "Method":
        """The method of a trained run, with the settings its manifest recorded."""
        return cls(
            **{
                section: settings(
                    **{k: v for k, v in manifest[section].items() if k in settings.config_keys}
                )
                for section, settings in cls.sections.items()
                if manifest.get(section)
            }
        )

    def fresh(self) -> "Method":
        """The same method and settings without per-run state (one per federated client)."""
        return type(self)(**{section: getattr(self, section) for section in self.sections})

    def settings_record(self) -> dict:
        """{section: settings}: what the manifest records and a checkpoint must match."""
        return {section: dataclasses.asdict(getattr(self, section)) for section in self.sections}

    # --- the model --------------------------------------------------------------------------------

    def adapt(self, network, backbone_id: str):
        """The backbone network with what this method trains made trainable."""
        raise InputError(
            f"method {self.name} does not train through the backbone "
            "(it trains on cached embeddings: `copra train-head`)"
        )

    def build(self, backbone, out_dim: int, kind: str, head):
        """The task model: the adapted backbone, mean pooling and a task head (`head`)."""
        from copra.protein_model import task_model

        network = self.adapt(backbone.model, f"{backbone.name}@{backbone.weights_id}")
        return task_model(network, backbone, out_dim, kind, head)

    def body_learning_rate(self, settings) -> float:
        """The learning rate of the backbone's trainable parameters (`settings`: fine-tuning's)."""
        return settings.learning_rate

    def parameter_groups(self, model, settings) -> list[dict]:
        """The optimizer's groups: the trainable backbone parameters, then the head."""
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        body = [p for n, p in trainable if not n.startswith("head.")]
        head = [p for n, p in trainable if n.startswith("head.")]
        return [
            {"params": body, "lr": self.body_learning_rate(settings)},
            {"params": head, "lr": settings.learning_rate},
        ]

    # --- hooks of the training loops --------------------------------------------------------------

    def start(self, model, total_steps: int, seed: int) -> None:
        """Bind to the model of one run, before its first step."""

    def before_step(self, step: int) -> None:
        """Before the first forward pass of optimizer step `step` (0-based)."""

    def extra_loss(self):
        """The method's own term of the training loss of a batch (None: none)."""
        return None

    def after_backward(self, step: int) -> None:
        """After each backward pass of step `step` (once per accumulated batch)."""

    def after_step(self, step: int) -> None:
        """After the optimizer's update of step `step`, before the gradients are cleared."""

    def before_evaluation(self) -> None:
        """Before the model is evaluated: it runs as it will be saved."""

    def settled(self, steps_done: int) -> bool:
        """Whether an epoch ending after `steps_done` steps may be chosen as the best (and
        early stopping may stop there): a method may need steps before its model is final."""
        return True

    def finalize(self, model) -> None:
        """After training (the best epoch restored), before the final scores and the save."""

    def state_dict(self):
        """Per-run state a resumed run needs (None: none)."""
        return None

    def load_state_dict(self, state) -> None:
        """Restore what `state_dict` returned."""

    # --- the run folder ---------------------------------------------------------------------------

    def save(self, network, out_dir) -> None:
        """Write the trained backbone part (`network`) into the run folder."""
        raise NotImplementedError(f"method {self.name} saves no backbone weights")

    def load(self, network, run_folder):
        """`network` (the untrained backbone) with the run's trained weights."""
        raise InputError(f"runs of method {self.name} hold no backbone weights", path=run_folder)

    def manifest(self, model) -> dict:
        """What the run's manifest records of the method, after training `model`."""
        return self.settings_record()

    def write_records(self, out_dir) -> None:
        """Files of the method's own beside the run's (e.g. a schedule it followed)."""
