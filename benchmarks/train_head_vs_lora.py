"""Time per training epoch: the head-only baseline on cached embeddings vs LoRA fine-tuning.

Both train the same binary task on the same seeded random protein sequences (`finetune_step.py`'s
task), everything from copra itself:

- LoRA epoch: `Trainer.train_epoch` (the `finetune:` defaults: batches of 4, gradient
  accumulation 16, random crops; the `lora:` and `head:` defaults) over all sequences, on the real
  ESM-2 architecture with seeded random weights.
- Head epoch: `copra.head_baseline.train_epoch` (the `head:` defaults: batches of 64, AdamW) over
  the mean-pooled last-layer embeddings of the same sequences, computed once beforehand with the
  frozen backbone (what the embedding cache holds); that one-time pass is timed and shown apart.

    .venv/bin/python benchmarks/train_head_vs_lora.py [--model esm2_t6_8M_UR50D] [--sequences 200]
"""

import argparse
import statistics
import time

import torch
from finetune_step import binary_task, build_trainer

from copra.finetune import steps_per_epoch
from copra.head_baseline import new_head, train_epoch
from copra.methods.head import HeadSettings
from copra.protein_model import mean_pool
from copra.settings import FinetuneSettings


@torch.no_grad()
def embeddings(trainer, data, batch_size: int) -> torch.Tensor:
    """Mean-pooled last-layer vectors of the frozen backbone (adapters off), one per sequence."""
    model = trainer.model
    model.eval()
    vectors = []
    with model.backbone.disable_adapter():
        rows = list(range(len(data.sequences)))
        for start in range(0, len(rows), batch_size):
            (tokens,) = trainer.batcher.tokens(data, rows[start : start + batch_size])
            out = model.backbone(tokens, repr_layers=[model.num_layers])
            reps = out["representations"][model.num_layers]
            vectors.append(mean_pool(reps, tokens, model.alphabet).float().cpu())
    return torch.cat(vectors)


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="esm2_t6_8M_UR50D", help="ESM-2 architecture")
    parser.add_argument("--sequences", type=int, default=200)
    parser.add_argument("--length", type=int, default=300, help="residues per sequence")
    parser.add_argument("--lora-epochs", type=int, default=2, help="timed LoRA epochs")
    parser.add_argument("--head-epochs", type=int, default=50, help="timed head epochs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data, targets = binary_task(args.sequences, args.length, args.seed)
    settings = FinetuneSettings(device="cpu")
    steps = steps_per_epoch(args.sequences, settings)
    trainer, _ = build_trainer("lora", args.model, targets, settings, args.seed, steps)

    start = time.perf_counter()
    x = embeddings(trainer, data, settings.eval_batch_size)
    embed_s = time.perf_counter() - start
    head_settings = HeadSettings()
    torch.manual_seed(args.seed)
    head, optimizer = new_head(x, targets, head_settings)
    generator = torch.Generator().manual_seed(args.seed)
    epoch = (head, optimizer, x, data.targets, targets, head_settings, generator)
    train_epoch(*epoch)  # warmup
    head_s = statistics.median(timed(train_epoch, *epoch) for _ in range(args.head_epochs))
    lora = [timed(trainer.train_epoch, data) for _ in range(args.lora_epochs)]
    lora_s = statistics.median(lora)

    print(
        f"{args.model} (random weights), {args.sequences} sequences x {args.length} residues, "
        f"binary task, device {trainer.device} ({torch.get_num_threads()} threads)"
    )
    print(
        f"lora: Trainer.train_epoch, batches of {settings.batch_size}, gradient accumulation "
        f"{settings.gradient_accumulation}: epochs {', '.join(f'{t:.2f}' for t in lora)} s"
    )
    print(
        f"head: head_baseline.train_epoch, batches of {head_settings.batch_size}, on {x.shape[0]} "
        f"x {x.shape[1]} cached embeddings: median of {args.head_epochs} epochs "
        f"(one-time embedding pass: {embed_s:.2f} s)"
    )
    print(f"per epoch: lora {lora_s:.3f} s, head {1000 * head_s:.3f} ms")
    print(f"head-only is {lora_s / head_s:.0f}x faster per epoch than lora")


if __name__ == "__main__":
    main()
