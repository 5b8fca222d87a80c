"""`copra export-hf`: a trained run as files transformers and peft load without copra.

The adapter in peft's format with transformers' ESM module names (a peft method's run), the
whole backbone as an `EsmModel` folder (a method that trains the backbone itself), or nothing of
the backbone (a head run); always the head (`head.safetensors`, `head.json`), the tokenizer, a
README with the lines that load it and `copra_head.py` (copra/exported_head.py, verbatim).

The head is not `EsmForSequenceClassification`'s classifier: copra's head reads the mean of the
residues' representations, that classifier the BOS token's, so no mapping computes the same.
"""

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from copra import methods
from copra.atomic import atomic_directory
from copra.errors import InputError
from copra.hf_checkpoint import HUB_OWNER, LAYER_NAMES, fair_esm_name
from copra.provenance import write_manifest
from copra.tables import COMPLEX_KIND, PAIR_KIND
from copra.trained_run import TrainedRun

HEAD_NAMES = {"layers.1": "dense", "layers.4": "out_proj"}  # TaskHead's two Linear layers
FAIR_ESM_MODULES = {fair: hf for hf, fair in LAYER_NAMES.items()}
FAIR_ESM_MODULE = re.compile(rf"layers\.(\d+)\.({'|'.join(map(re.escape, FAIR_ESM_MODULES))})\b")


def hf_module_path(name: str) -> str:
    """Every fair-esm block module path in `name` as transformers' (`layers.3.self_attn.k_proj`
    -> `encoder.layer.3.attention.self.key`); the rest of the name as it is."""
    return FAIR_ESM_MODULE.sub(
        lambda found: f"encoder.layer.{found[1]}.{FAIR_ESM_MODULES[found[2]]}", name
    )


def esm2_hf_config(num_layers: int, embed_dim: int, heads: int, token_dropout: bool = True):
    """transformers' EsmConfig of an ESM-2 architecture, as facebook's checkpoints have it."""
    from transformers import EsmConfig

    return EsmConfig(
        vocab_size=33,
        hidden_size=embed_dim,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=4 * embed_dim,
        position_embedding_type="rotary",
        token_dropout=token_dropout,
        mask_token_id=32,
        pad_token_id=1,
        emb_layer_norm_before=False,
        layer_norm_eps=1e-5,
        max_position_embeddings=1026,
    )


def save_hf_model(model, folder: Path) -> None:
    """fair-esm's ESM2 `model` as transformers' EsmModel (`save_pretrained`)."""
    from transformers import EsmModel

    config = esm2_hf_config(
        model.num_layers, model.embed_dim, model.attention_heads, model.token_dropout
    )
    hf = EsmModel(config, add_pooling_layer=False)
    names = {fair_esm_name(key): key for key in hf.state_dict() if fair_esm_name(key)}
    state = {names[key]: tensor for key, tensor in model.state_dict().items() if key in names}
    missing = sorted(set(names.values()) - set(state))
    if missing:  # a name mapping that lost a tensor: never write a half-trained model
        raise RuntimeError(f"fair-esm's ESM2 lacks {missing[:3]} of transformers' EsmModel")
    hf.load_state_dict(state, strict=False)
    hf.save_pretrained(folder)


def save_tokenizer(alphabet, folder: Path) -> None:
    """transformers' EsmTokenizer with fair-esm's vocabulary in its order (the same token ids)."""
    from transformers import EsmTokenizer

    vocabulary = folder / "vocab.txt"
    vocabulary.write_text("".join(f"{token}\n" for token in alphabet.all_toks))
    EsmTokenizer(str(vocabulary), model_max_length=1026).save_pretrained(folder)


def export_adapter(adapter: Path, folder: Path, hub_id: str) -> list[str]:
    """The run's peft adapter with transformers' module names; the modules it adapts."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    state = load_file(str(adapter / "adapter_model.safetensors"))
    renamed = {hf_module_path(key): tensor for key, tensor in state.items()}
    modules = sorted({key.split(".lora_")[0].removeprefix("base_model.model.") for key in renamed})
    config.update(
        base_model_name_or_path=hub_id,
        target_modules=modules,  # exact paths: `dense` alone would name three modules a block
        layers_to_transform=None,
        layers_pattern=None,
        auto_mapping=None,
        task_type="FEATURE_EXTRACTION",
        rank_pattern={hf_module_path(k): v for k, v in (config.get("rank_pattern") or {}).items()},
        alpha_pattern={
            hf_module_path(k): v for k, v in (config.get("alpha_pattern") or {}).items()
        },
    )
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    save_file(renamed, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    return modules


def head_spec(run: TrainedRun, num_layers: int, embed_dim: int) -> dict:
    """head.json: how copra_head.py turns the backbone's representations into the run's scores
    (a head run: as its embedding was made; a fine-tuned run: its last layer, truncated)."""
    manifest = run.manifest
    embedding = manifest.get("embedding") or {
        "layer": num_layers,
        "max_residues": manifest["settings"]["max_residues"],
        "long_sequences": "truncate",
        "window_stride": 1,
    }
    pair = manifest["kind"] == PAIR_KIND
    return {
        "task_kind": manifest["kind"],
        **{k: embedding[k] for k in ("layer", "max_residues", "long_sequences", "window_stride")},
        "embed_dim": embed_dim,
        "pooling": "mean over the residues (not BOS, EOS or padding)",
        "pair_combination": manifest["head"]["pair_combination"] if pair else None,
        "layers": "(x - mean) / std where given, tanh(dense), out_proj; no dropout in inference",
        "targets": json.loads(run.targets.to_json()),
        "score_columns": run.targets.score_columns(),
    }


def exported_head(run: TrainedRun) -> dict[str, torch.Tensor]:
    """The head's tensors under head.json's names (head runs: with their mean and std)."""
    out = {}
    for key, tensor in run.head_state().items():
        module, _, kind = key.removeprefix("head.").rpartition(".")
        out[f"{HEAD_NAMES[module]}.{kind}" if module in HEAD_NAMES else kind] = tensor.contiguous()
    return out


README = """# {name}: a copra run for transformers and peft

Exported by `copra export-hf` from `{run}` ({method} on {task_kind}, seed {seed}).
The backbone is `{hub_id}`{weights_note}.

```python
import sys; sys.path.insert(0, "{output}")  # for copra_head.py
from transformers import AutoTokenizer, EsmModel
{load_lines}
import copra_head
tokenizer = AutoTokenizer.from_pretrained("{output}")
scores = copra_head.load("{output}").predict(model, tokenizer, {args})
```

`scores` has one column per score of the run's predictions.tsv: {columns}.
`head.json` says how they are computed (layer, pooling, truncation, pair combination, targets);
`head.safetensors` holds the head (`dense`, `out_proj`{standardization}).
`export.json` records the run, its checksums and the versions.
"""


def load_lines(kind: str, base: str) -> str:
    """The README's lines that make `model`: the adapter on its base, or the whole model."""
    if kind == "adapter":
        return (
            "from peft import PeftModel\n"
            f'base = EsmModel.from_pretrained("{base}", add_pooling_layer=False)\n'
            'model = PeftModel.from_pretrained(base, "{output}").eval()'
        )
    folder = "{output}" if kind == "model" else base
    return f'model = EsmModel.from_pretrained("{folder}", add_pooling_layer=False).eval()'


def export_kind(method) -> str:
    """`adapter` (a peft adapter), `head` (the frozen backbone's embeddings) or `model`."""
    if method.adapter:
        return "adapter"
    return "head" if method.cached_embeddings else "model"


def check_exportable(run: TrainedRun, output: Path, include_base: bool, kind: str) -> str:
    """The run's ESM-2 name, or a clear refusal of what cannot be exported (or overwritten)."""
    from copra.backbone import ESM2_ARCHITECTURES

    if run.manifest["kind"] == COMPLEX_KIND:
        raise InputError(
            "complex_regression runs are not exported: their structure and RNA encoders have no "
            "transformers counterpart (use `copra predict`)",
            path=run.folder,
        )
    name, weights = run.recorded_backbone
    if name not in ESM2_ARCHITECTURES:
        raise InputError(f"backbone {name} is not an ESM-2 of the hub", path=run.folder)
    if str(weights).startswith("random") and kind != "model" and not include_base:
        raise InputError(
            f"was trained on random weights ({weights}), which {HUB_OWNER}/{name} is "
            "not: add --include-base to write the backbone into the export",
            path=run.folder,
        )
    if output.exists() and any(output.iterdir()) and not (output / "export.json").is_file():
        raise InputError("exists and is not an export: give a new or empty folder", path=output)
    return name


def export_run(run_folder, output, model, include_base: bool = False, config_snapshot=None):
    """Write the run at `run_folder` as a transformers + peft folder at `output`; `model`
    (ModelSettings) loads the backbone where the export holds one (a whole model, --include-base).
    """
    import esm

    from copra.backbone import ESM2_ARCHITECTURES

    run, output = TrainedRun.open(run_folder), Path(output)
    kind = export_kind(methods.get(run.manifest["method"]))
    name = check_exportable(run, output, include_base, kind)
    num_layers, embed_dim, _ = ESM2_ARCHITECTURES[name]
    hub_id = f"{HUB_OWNER}/{name}"
    backbone = None
    if include_base or kind == "model":
        backbone = model.load()
        run.check_backbone(backbone)
    with atomic_directory(output) as tmp:
        if kind == "adapter":
            export_adapter(run.adapter_folder, tmp, hub_id)
        elif kind == "model":
            save_hf_model(run.method.load(backbone.model, run.folder), tmp)
        if include_base and kind != "model":
            save_hf_model(backbone.model, tmp / "base")
        head = exported_head(run)
        save_file(head, str(tmp / "head.safetensors"), metadata={"format": "pt"})
        spec = head_spec(run, num_layers, embed_dim)
        (tmp / "head.json").write_text(json.dumps(spec, indent=2) + "\n")
        save_tokenizer(esm.data.Alphabet.from_architecture("ESM-1b"), tmp)
        shutil.copyfile(Path(__file__).with_name("exported_head.py"), tmp / "copra_head.py")
        base = f"{output}/base" if include_base else hub_id
        pair = spec["pair_combination"] is not None
        (tmp / "README.md").write_text(
            README.format(
                name=output.name,
                run=run.folder,
                method=run.manifest["method"],
                task_kind=run.manifest["kind"],
                seed=run.manifest["seed"],
                hub_id=hub_id,
                weights_note=f" (here: its weights in `{output}/base`)" if include_base else "",
                load_lines=load_lines(kind, base).replace("{output}", str(output)),
                output=output,
                args="sequences, partners" if pair else "sequences",
                columns=", ".join(f"`{c}`" for c in spec["score_columns"]),
                standardization=", and the standardization `mean`, `std`" if "mean" in head else "",
            )
        )
        write_manifest(
            tmp / "export.json",
            inputs=run.files(),
            config=config_snapshot,
            run=str(run.folder),
            exported=kind,
            base_model=hub_id,
            weights=run.recorded_backbone[1],
            include_base=include_base,
        )
    return output
