"""Step time and peak memory of LoRA, CopRA, AdaLoRA, Lingo and full fine-tuning on the same
batches.

Every method trains the same seeded batches of random protein sequences (binary labels)
through copra's own pieces: a method's `build` on the real ESM-2 architecture with seeded random
weights, and the optimizer, schedule, layer dropper and batcher of a `Trainer`. One step is what
`Trainer.train_epoch` does per batch (gradient accumulation 1): CopRA draws its active blocks,
then forward, loss (with the method's own term: AdaLoRA's orthogonality loss), backward, gradient
clipping, optimizer step, the method's after-step hook (AdaLoRA and Lingo: peft's
`update_and_allocate`) and scheduler step. Tokenization happens before the clock starts. CopRA's
activation probability is the one at `--progress` of its schedule (default: half-way), as in the
middle of a training run; AdaLoRA and Lingo allocate at that step of their schedule, where the
budget falls and every timed step is a mask event (their costliest kind of step). A method
named with `+ckpt` (`--activation-checkpointing` adds `lora+ckpt`) trains with
`finetune.activation_checkpointing`.

Step time: one child process builds all three models and runs their steps round-robin (the order
rotating each round), so a machine whose load changes during the run slows every method alike;
`time.perf_counter` around each step (CUDA synchronized), median over the timed steps.

Peak memory: one fresh child process per method running a few steps, so the peak is that method's
alone: on CUDA `torch.cuda.max_memory_allocated`, on the CPU the child's peak resident set size
(`ru_maxrss`), also given above the child's RSS just before its model was built.

    .venv/bin/python benchmarks/finetune_step.py [--model esm2_t6_8M_UR50D] [--output out.tsv]
        [--activation-checkpointing] [--methods lora lora+ckpt copra adalora lingo full]
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("lora", "copra", "adalora", "lingo", "full")
CHECKPOINTED = "+ckpt"  # a method with `finetune.activation_checkpointing` on, e.g. lora+ckpt
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
KIND = "sequence_classification"
SCHEDULE_STEPS = 1000  # CopRA's schedule length; every step draws at `--progress` of it
MEMORY_STEPS = 3  # optimizer state exists from step 1 on: step 2 and later hit the peak


def rss_peak_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def random_sequences(count: int, length: int, seed: int) -> list[str]:
    """`count` seeded random protein sequences of exactly `length` residues."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    indices = torch.randint(len(AMINO_ACIDS), (count, length), generator=generator).tolist()
    return ["".join(AMINO_ACIDS[i] for i in row) for row in indices]


def binary_task(count: int, length: int, seed: int):
    """`count` seeded random sequences with alternating binary labels: (TaskData, Targets)."""
    import pandas as pd

    from copra.sequences import sequence_hash
    from copra.targets import Targets
    from copra.task_data import task_data

    sequences = random_sequences(count, length, seed)
    hashes = [sequence_hash(s) for s in sequences]
    labels = [str(i % 2) for i in range(count)]  # both classes in every batch
    table = pd.DataFrame({"seq_hash": hashes, "label": labels})
    targets = Targets.from_training(KIND, table["label"])
    return task_data(table, dict(zip(hashes, sequences, strict=True)), KIND, targets), targets


def task(args):
    """The benchmark's binary task: `steps` batches of seeded random sequences."""
    count = (args.warmup_steps + args.steps) * args.batch_size
    data, targets = binary_task(count, args.length, args.seed)
    batches = [list(range(i, i + args.batch_size)) for i in range(0, count, args.batch_size)]
    return data, targets, batches


def build_trainer(method: str, model_name: str, targets, settings, seed: int, steps: int):
    """A `Trainer` of `method` on the real architecture with seeded random weights, the `lora:`,
    `adalora:`, `lingo:`, `head:` and `layer_drop:` defaults; (trainer, number of blocks)."""
    import torch

    from copra import methods
    from copra.backbone import load_backbone
    from copra.finetune import Trainer
    from copra.settings import HeadArchitecture

    torch.manual_seed(seed)
    backbone = load_backbone(model_name, "random", seed=0)
    chosen = methods.get(method)()
    model = chosen.build(backbone, targets.out_dim, KIND, HeadArchitecture())
    trainer = Trainer(model, chosen, targets, settings, seed, steps)
    return trainer, backbone.num_layers


class Method:
    """One method's model and `Trainer` (optimizer, schedule, layer dropper) on the device;
    `name` is lora, copra or full, with `+ckpt` for activation checkpointing."""

    def __init__(self, args, name: str, targets):
        from copra.layer_drop import activation_probability
        from copra.settings import FinetuneSettings

        self.name = name
        method = name.removesuffix(CHECKPOINTED)
        self.settings = FinetuneSettings(
            batch_size=args.batch_size,
            gradient_accumulation=1,
            max_epochs=1,
            max_residues=args.length,
            device=args.device,
            activation_checkpointing=name.endswith(CHECKPOINTED),
        )
        self.trainer, self.num_blocks = build_trainer(
            method, args.model, targets, self.settings, args.seed, SCHEDULE_STEPS
        )
        self.model = self.trainer.model
        self.device = self.trainer.device
        self.draw_step = int(args.progress * SCHEDULE_STEPS)
        dropper = getattr(self.trainer.method, "dropper", None)  # CopRA's layer dropping
        self.p_active = None
        if dropper:
            self.p_active = activation_probability(self.draw_step, SCHEDULE_STEPS, dropper.settings)
        self.active_blocks: list[int] = []
        self.model.train()

    def parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, as the run manifest counts them."""
        trainable = set(self.trainer.trainable)
        named = list(self.model.named_parameters())
        return sum(p.numel() for n, p in named if n in trainable), sum(p.numel() for _, p in named)

    def step(self, tokens, y) -> float:
        """One optimizer step; its loss."""
        import torch

        from copra.device import autocast

        trainer = self.trainer
        dropper = getattr(trainer.method, "dropper", None)
        if dropper:
            self.active_blocks.append(len(dropper.draw(self.draw_step)))
        with autocast(self.device):
            outputs = self.model(*tokens)
        loss = trainer.targets.loss(outputs.float(), y)
        extra = trainer.method.extra_loss()
        (loss if extra is None else loss + extra).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
        trainer.optimizer.step()
        trainer.method.after_step(self.draw_step)
        trainer.scheduler.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inputs_for(method: Method, data, batches):
    """Tokens and targets of every batch on the method's device (fair-esm's batch converter)."""
    return [
        (method.trainer.batcher.tokens(data, rows), data.targets[rows].to(method.device))
        for rows in batches
    ]


def check_loss(name: str, loss) -> None:
    if not math.isfinite(float(loss)):
        raise RuntimeError(f"{name}: training loss is {float(loss)}")


def measure_time(args) -> dict:
    """All methods in this process, steps round-robin; per method its step times."""
    import torch

    data, targets, batches = task(args)
    methods = [Method(args, name, targets) for name in args.methods]
    inputs = inputs_for(methods[0], data, batches)
    device = methods[0].device
    times = {m.name: [] for m in methods}
    for i, (tokens, y) in enumerate(inputs):
        for k in range(len(methods)):
            method = methods[(i + k) % len(methods)]
            synchronize(device)
            start = time.perf_counter()
            loss = method.step(tokens, y)
            synchronize(device)
            times[method.name].append(time.perf_counter() - start)
            check_loss(method.name, loss)
    results = {}
    for m in methods:
        trainable, total = m.parameters()
        timed = times[m.name][args.warmup_steps :]
        active = m.active_blocks[args.warmup_steps :]
        results[m.name] = {
            "trainable_params": trainable,
            "total_params": total,
            "median_step_ms": 1000 * statistics.median(timed),
            "step_ms": [round(1000 * t, 2) for t in timed],
            "p_active": m.p_active,
            "mean_active_blocks": statistics.mean(active) if active else None,
            "num_blocks": m.num_blocks,
        }
    return {"device": str(device), "threads": torch.get_num_threads(), "methods": results}


def measure_memory(args, name: str) -> dict:
    """Peak memory of a few steps of one method, alone in this process."""
    import torch

    from copra.device import pick_device

    data, targets, batches = task(args)
    if pick_device(args.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_mb = rss_peak_mb()
    method = Method(args, name, targets)
    for tokens, y in inputs_for(method, data, batches[:MEMORY_STEPS]):
        check_loss(name, method.step(tokens, y))
    synchronize(method.device)
    if method.device.type == "cuda":
        return {"peak_mb": torch.cuda.max_memory_allocated(method.device) / 2**20, "base_mb": 0.0}
    return {"peak_mb": rss_peak_mb(), "base_mb": base_mb}


def run_child(args, *worker: str) -> dict:
    """This script as a worker in a fresh interpreter; its JSON result."""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), *args.argv]
        command += ["--worker", *worker, "--result", str(result)]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-8000:])
            raise SystemExit(f"worker {' '.join(worker)} failed (exit {completed.returncode})")
        return json.loads(result.read_text())


def table_rows(timing: dict, memory: dict) -> list[dict]:
    full_ms = timing["full"]["median_step_ms"]
    full_peak = memory["full"]["peak_mb"]
    full_above = full_peak - memory["full"]["base_mb"]
    rows = []
    for name in timing:
        t, m = timing[name], memory[name]
        above = m["peak_mb"] - m["base_mb"]
        rows.append(
            {
                "method": name,
                "trainable_params": t["trainable_params"],
                "median_step_ms": round(t["median_step_ms"], 1),
                "step_ratio": round(t["median_step_ms"] / full_ms, 3),
                "peak_mb": round(m["peak_mb"], 1),
                "peak_ratio": round(m["peak_mb"] / full_peak, 3),
                "above_base_mb": round(above, 1),
                "above_base_ratio": round(above / full_above, 3),
            }
        )
    return rows


def comparisons(rows: list[dict]) -> list[str]:
    """Each variant against its base method: lora+ckpt vs lora, copra, adalora and lingo vs
    lora (at lora.rank 8 = adalora.init_r by default)."""
    by_name = {row["method"]: row for row in rows}
    pairs = [(f"{m}{CHECKPOINTED}", m) for m in METHODS]
    pairs += [("copra", "lora"), ("adalora", "lora"), ("lingo", "lora")]
    pairs += [(f"copra{CHECKPOINTED}", f"lora{CHECKPOINTED}")]
    lines = []
    for name, base in pairs:
        if name in by_name and base in by_name:
            a, b = by_name[name], by_name[base]
            lines.append(
                f"{name} vs {base}: step time x{a['median_step_ms'] / b['median_step_ms']:.3f}, "
                f"peak x{a['peak_mb'] / b['peak_mb']:.3f}, "
                f"above base x{a['above_base_mb'] / b['above_base_mb']:.3f}"
            )
    return lines


def format_table(rows: list[dict]) -> str:
    cells = [list(rows[0])] + [[str(v) for v in row.values()] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    return "\n".join(
        "  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in cells
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Step time and peak memory of lora, copra, adalora, lingo and full "
        "fine-tuning, "
        "as ratios to full fine-tuning."
    )
    parser.add_argument("--model", default="esm2_t6_8M_UR50D", help="ESM-2 architecture")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=256, help="residues per sequence")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per method")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--progress",
        type=float,
        default=0.5,
        help="fraction of CopRA's schedule at which its layers are drawn (default 0.5)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        help="methods to compare (full among them): lora, copra, adalora, lingo, full, each with "
        f"{CHECKPOINTED} (finetune.activation_checkpointing on), e.g. lora{CHECKPOINTED}",
    )
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help=f"also measure lora{CHECKPOINTED}: LoRA with finetune.activation_checkpointing on",
    )
    parser.add_argument("--output", type=Path, help="also write the table here as TSV")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.steps, args.batch_size, args.length) < 1 or args.warmup_steps < 0:
        parser.error("--steps, --batch-size and --length must be >= 1, --warmup-steps >= 0")
    if not 0 <= args.progress <= 1:
        parser.error("--progress must lie in [0, 1]")
    if args.activation_checkpointing and "lora" + CHECKPOINTED not in args.methods:
        args.methods.insert(
            args.methods.index("lora") + 1 if "lora" in args.methods else 0, "lora" + CHECKPOINTED
        )
    unknown = [m for m in args.methods if m.removesuffix(CHECKPOINTED) not in METHODS]
    if unknown or "full" not in args.methods or len(set(args.methods)) < len(args.methods):
        parser.error(
            f"--methods: distinct names of {', '.join(METHODS)} (optionally "
            f"{CHECKPOINTED}), full among them; got {' '.join(args.methods)}"
        )
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        kind, *rest = args.worker
        result = measure_time(args) if kind == "time" else measure_memory(args, rest[0])
        args.result.write_text(json.dumps(result))
        return
    started, load = time.perf_counter(), os.getloadavg()[0]
    timing = run_child(args, "time")
    methods = timing["methods"]
    for name, result in methods.items():  # progress on stderr, kept should a later child fail
        print(f"{name}: step times {result['step_ms']} ms", file=sys.stderr, flush=True)
    memory = {}
    for name in args.methods:
        memory[name] = run_child(args, "memory", name)
        print(f"{name}: peak {memory[name]}", file=sys.stderr, flush=True)
    cuda = timing["device"].startswith("cuda")
    print(
        f"{args.model} (random weights), batch {args.batch_size} x {args.length} residues, "
        f"{args.steps} timed steps after {args.warmup_steps} warmup, device {timing['device']}"
        + ("" if cuda else f" ({timing['threads']} threads)")
    )
    for name, copra in methods.items():
        if copra["p_active"] is not None:
            print(
                f"{name}: p_active {copra['p_active']:.3f} at {args.progress:.0%} of its "
                f"schedule, {copra['mean_active_blocks']:.2f} of {copra['num_blocks']} blocks "
                "active per step on average"
            )
    print(
        f"peak memory: {'max_memory_allocated' if cuda else 'ru_maxrss'} of one child process "
        f"per method, {MEMORY_STEPS} steps; load average at start {load:.2f}, "
        f"wall time {time.perf_counter() - started:.0f} s"
    )
    rows = table_rows(methods, memory)
    print(format_table(rows))
    for line in comparisons(rows):
        print(line)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        lines = ["\t".join(rows[0])] + ["\t".join(map(str, row.values())) for row in rows]
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
