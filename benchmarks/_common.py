"""Shared pieces of the embedding benchmarks: the yeast subset, options, timing, FLOP counts.

Run the scripts from the project root (`.venv/bin/python benchmarks/embed_....py`); the yeast
sequences are the project's shared data set (`../shared/data/ppi_yeast/sequences.fasta`).
"""

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/x.py` puts benchmarks/ first, not the root
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars between the tables
YEAST = ROOT.parent / "shared" / "data" / "ppi_yeast" / "sequences.fasta"


def add_common_options(parser: argparse.ArgumentParser, sequences: int, repeats: int) -> None:
    """--model, --weights, --sequences, --repeats, --threads, --device, --seed, --fasta."""
    parser.add_argument("--model", default="esm2_t6_8M_UR50D", help="an ESM-2 architecture")
    parser.add_argument("--sequences", type=int, default=sequences, help="size of the subset")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats (median)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on cuda)")
    parser.add_argument("--seed", type=int, default=0, help="subset draw and random weights")
    parser.add_argument("--fasta", type=Path, default=YEAST, help="where to draw sequences from")


def setup(args):
    """Apply --threads and check --device; the torch device to run on."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no GPU here")
    return device


def start(args):
    """`setup` and the seeded subset of --sequences from --fasta: (device, records)."""
    return setup(args), sequence_subset(args.fasta, args.sequences, args.seed)


def sequence_subset(fasta: Path, count: int, seed: int) -> list[tuple[str, str]]:
    """`count` (id, sequence) records drawn at random (seeded) from `fasta`, in file order."""
    from copra.sequences import read_fasta

    if not fasta.is_file():
        sys.exit(f"{fasta} not found: the benchmarks need the project's shared data")
    records = read_fasta(fasta)
    if count > len(records):
        sys.exit(f"--sequences {count}: {fasta.name} has {len(records)} sequences")
    chosen = sorted(random.Random(seed).sample(range(len(records)), count))
    return [(records[i].id, records[i].sequence) for i in chosen]


def backbone(args):
    """The ESM-2 architecture `args.model` with seeded random weights."""
    from copra.backbone import load_backbone

    return load_backbone(args.model, "random", seed=args.seed)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device):
    """(seconds, result) of `function()`, CUDA synchronized before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def median(values) -> float:
    return statistics.median(values)


def machine(device) -> str:
    """One line: CPU, cores, torch and its threads, load average (or the GPU)."""
    import torch

    cpu = platform.processor() or "cpu"
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    names = [line for line in lines if line.startswith("model name")]
    if names:
        cpu = names[0].split(":", 1)[1].strip()
    text = (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}"
    )
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def format_table(rows: list[dict]) -> str:
    import pandas as pd

    return pd.DataFrame(rows).to_string(index=False)


def forward_flops(shapes, layers: int, dim: int) -> dict:
    """Analytic FLOPs of `layers` ESM-2 blocks on padded batches of (batch, tokens) `shapes`.

    Per block: q, k, v and output projections 8 N d^2, feed-forward (d -> 4d -> d) 16 N d^2
    (N = batch x tokens, padding included), attention scores and weighted sum 4 B T^2 d.
    Layer norms, GELU, softmax and rotary embeddings are not counted.
    """
    linear = sum(24 * b * t * dim**2 for b, t in shapes) * layers
    attention = sum(4 * b * t**2 * dim for b, t in shapes) * layers
    return {"linear": linear, "attention": attention, "total": linear + attention}


def matmul_rate(device, size: int = 2048, repeats: int = 5) -> float:
    """Median FLOP/s of a square `size` torch.matmul (float32; bfloat16 on a GPU)."""
    import torch

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    seconds = [timed(lambda: torch.matmul(a, b), device)[0] for _ in range(repeats)]
    return 2 * size**3 / median(seconds)
