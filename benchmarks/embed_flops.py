"""Achieved FLOP rate of copra's embedding forward against the machine's matmul rate.

The embedding is `embed_sequences` (copra's batches, tokenization and pooling included in the
time) on a subset of the yeast sequences. Its FLOPs are counted analytically over the padded
batches that copra actually runs (see `_common.forward_flops`). The machine's rate is the median
of a square float32 `torch.matmul` (bfloat16 on a GPU) with the same threads, measured before
each embedding repeat. The target: embedding rate >= 40% of the matmul rate.

    .venv/bin/python benchmarks/embed_flops.py [--sequences 300] [--matmul-size 2048]
"""

import argparse
import sys

import _common

TARGET = 0.40


def padded_shapes(backbone, sequences, settings) -> list[tuple[int, int]]:
    """(batch, tokens) of every batch copra runs for `sequences` (BOS and EOS included)."""
    from copra.embed import chunk_sequence, token_batches

    chunks = [c for i, s in enumerate(sequences) for c in chunk_sequence(i, s, settings)]
    batches = token_batches(chunks, settings.batch_tokens)
    return [(len(b), max(len(c.residues) for c in b) + 2) for b in batches]


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_options(parser, sequences=300, repeats=3)
    parser.add_argument("--matmul-size", type=int, default=2048, help="square matmul size")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from copra.embed import embed_sequences, resolve_layer
    from copra.settings import EmbeddingSettings

    args = parse_args(argv)
    device, records = _common.start(args)
    sequences = [s for _, s in records]
    backbone = _common.backbone(args)
    settings = EmbeddingSettings(device=args.device)
    layers = resolve_layer(backbone, settings.layer)
    shapes = padded_shapes(backbone, sequences, settings)
    flops = _common.forward_flops(shapes, layers, backbone.embed_dim)
    residues = sum(map(len, sequences))
    padded = sum(b * t for b, t in shapes)
    print(f"{args.model} (random weights), {layers} layers, device {device}")
    print(f"machine: {_common.machine(device)}")
    print(
        f"{len(sequences)} sequences, {residues} residues in {len(shapes)} batches of "
        f"{padded} padded tokens; forward {flops['total'] / 1e9:.1f} GFLOP "
        f"({flops['attention'] / flops['total']:.0%} in attention)"
    )
    embed_sequences(backbone, sequences[:8], settings)  # warm-up
    seconds, rates = [], []
    for _ in range(args.repeats):
        rates.append(_common.matmul_rate(device, args.matmul_size))
        seconds.append(
            _common.timed(lambda: embed_sequences(backbone, sequences, settings), device)[0]
        )
    embedding_rate = flops["total"] / _common.median(seconds)
    matmul = _common.median(rates)
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    rows = [
        {
            "measure": "embedding forward",
            "median_s": round(_common.median(seconds), 2),
            "gflop_per_s": round(embedding_rate / 1e9, 1),
        },
        {
            "measure": f"{dtype} matmul {args.matmul_size}^3",
            "median_s": round(2 * args.matmul_size**3 / matmul, 3),
            "gflop_per_s": round(matmul / 1e9, 1),
        },
    ]
    print(_common.format_table(rows))
    ratio = embedding_rate / matmul
    print(
        f"embedding / matmul rate: {ratio:.2f} (target >= {TARGET}: "
        f"{'met' if ratio >= TARGET else 'NOT met'})"
    )
    print(f"residues per second: {residues / _common.median(seconds):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
