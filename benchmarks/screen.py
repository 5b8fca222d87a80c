"""What an all-pairs screen costs, against the backbone passes it cannot avoid.

Three measurements on the yeast proteome (`../shared/data/ppi_yeast/sequences.fasta`), each
through copra's own code (copra/screen.py, copra/inference.py, copra/embed.py), printed as ratios:

1. head: embedding N proteins with the frozen backbone (`embed_sequences`, what the cache holds)
   and then scoring all N(N-1)/2 pairs (`screen_scores` with a head on those vectors); the screen
   against the embedding alone (target <= 1.5), and the pair-scoring rate.
2. lora: the N proteins through a LoRA-adapted task model (`NetworkEncoder`, as `copra predict`
   runs a fine-tuned run) plus the pair scoring, against N passes of the frozen backbone plus the
   same pair scoring (target <= 1.2).
3. ensemble: backbone passes per protein with S seeds' models, counted by a forward hook
   (target: S).

Random weights (ESM-2 architecture, seeded; LoRA factors drawn at random, not zero): the cost does
not depend on the values.

    .venv/bin/python benchmarks/screen.py [--head-proteins 5664] [--lora-proteins 1000] [--seeds 3]
"""

import argparse
import copy
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from _common import YEAST, machine, sequence_subset, setup, timed  # noqa: I001

from copra.backbone import load_backbone
from copra.embed import embed_sequences
from copra.head_baseline import StandardizedHead
from copra.inference import HeadScorer, NetworkEncoder
from copra.methods.lora import Lora
from copra.screen import screen_scores
from copra.settings import EmbeddingSettings, HeadArchitecture, PredictSettings
from copra.targets import Targets
from copra.task_head import TaskHead

TARGETS = Targets("binary", classes=["0", "1"])


def head_scorer(dim: int, seed: int) -> HeadScorer:
    """A head as `head` runs have it (standardization, then the task head), seeded."""
    torch.manual_seed(seed)
    head = StandardizedHead(torch.randn(dim), torch.rand(dim) + 0.5, TaskHead(dim, 1))
    return HeadScorer(head, TARGETS, "mean")


def lora_model(backbone, seed: int):
    """A LoRA task model (the `lora:` defaults) with random, non-zero factors."""
    torch.manual_seed(seed)
    own = dataclasses.replace(backbone, model=copy.deepcopy(backbone.model))
    model = Lora().build(own, 1, "pair_classification", HeadArchitecture())
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.02)
    return model


def pair_scoring(vectors: np.ndarray, scorers, block: int) -> float:
    settings = PredictSettings(block_pairs=block)
    computed = [(scorer.prepare(vectors), scorer) for scorer in scorers]
    seconds, _ = timed(lambda: screen_scores(computed, len(vectors), settings), DEVICE)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head-proteins", type=int, default=5664, help="all of yeast: 5664")
    parser.add_argument("--lora-proteins", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3, help="the ensemble's size")
    parser.add_argument("--model", default="esm2_t6_8M_UR50D")
    parser.add_argument("--block-pairs", type=int, default=PredictSettings().block_pairs)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fasta", type=Path, default=YEAST)
    args = parser.parse_args()
    global DEVICE
    DEVICE = setup(args)
    backbone = load_backbone(args.model, "random", seed=args.seed)
    settings = EmbeddingSettings(device=str(DEVICE))
    print(machine(DEVICE))

    records = sequence_subset(args.fasta, args.head_proteins, args.seed)
    sequences = [s for _, s in records]
    n = len(sequences)
    embed_s, vectors = timed(lambda: embed_sequences(backbone, sequences, settings), DEVICE)
    pairs_s = pair_scoring(vectors, [head_scorer(vectors.shape[1], args.seed)], args.block_pairs)
    pairs = n * (n - 1) // 2
    print(f"\n1. head screen: {n} proteins, {pairs} pairs")
    rate = f"{pairs / pairs_s:,.0f} pairs/s"
    print(f"   embedding {embed_s:.1f} s, pair scoring {pairs_s:.1f} s ({rate})")
    print(f"   screen / embedding = {(embed_s + pairs_s) / embed_s:.3f}  (target <= 1.5)")

    subset = sequences[: args.lora_proteins]
    m = len(subset)
    frozen_s, frozen = timed(lambda: embed_sequences(backbone, subset, settings), DEVICE)
    model = lora_model(backbone, args.seed)
    encoder = NetworkEncoder(model, 1022, DEVICE, settings.batch_tokens)
    keyed = {str(i): s for i, s in enumerate(subset)}
    lora_s, adapted = timed(lambda: encoder(keyed), DEVICE)
    adapted = np.stack([adapted[str(i)] for i in range(m)])
    scorer = HeadScorer(model.head, TARGETS, "mean")
    pairs_s = pair_scoring(adapted, [scorer], args.block_pairs)
    print(f"\n2. lora screen: {m} proteins, {m * (m - 1) // 2} pairs")
    print(f"   {m} frozen-backbone passes {frozen_s:.1f} s; through the LoRA model {lora_s:.1f} s")
    print(f"   pair scoring {pairs_s:.1f} s")
    ratio = (lora_s + pairs_s) / (frozen_s + pairs_s)
    print(f"   screen / (N backbone passes + pair scoring) = {ratio:.3f}  (target <= 1.2)")

    passes = {"sequences": 0}

    def count(module, inputs, output):
        passes["sequences"] += inputs[0].shape[0]

    few = {str(i): s for i, s in enumerate(sequences[:50])}
    for seed in range(args.seeds):
        member = lora_model(backbone, seed)
        hook = member.backbone.register_forward_hook(count)
        NetworkEncoder(member, 1022, DEVICE, settings.batch_tokens)(few)
        hook.remove()
    per_input = passes["sequences"] / len(few)
    print(f"\n3. ensemble of {args.seeds} seeds: {per_input:g} backbone passes per protein")
    print(f"   (target: at most {args.seeds})")
    del frozen


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
