"""What adding 10% new sequences to a cached FASTA costs, against a full run from an empty cache.

Both runs are `copra embed` end to end (`run_embed`: read the FASTA, build the model, look up the
content-addressed cache, embed what it lacks, write the cache shards and the output `.npz`) on
the same FASTA of the whole subset. Before the clock starts, 90% of the subset (all but a seeded
random 10%) is embedded into a fresh cache; each incremental repeat runs on a copy of that cache,
each full repeat on an empty one, the order alternating. The target: incremental / full <= 0.15.

    .venv/bin/python benchmarks/embed_incremental.py [--sequences 1000] [--new-fraction 0.1]
"""

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

import _common

TARGET = 0.15
FULL, INCREMENTAL = "full (empty cache)", "incremental (90% cached)"


def write_fasta(path: Path, records) -> Path:
    path.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records))
    return path


def copra_embed(args, fasta: Path, output: Path, cache: Path) -> None:
    """`copra embed --model <args.model> --weights random --fasta ... --cache-dir ...`."""
    from copra.embed import run_embed
    from copra.settings import EmbeddingSettings, ModelSettings

    settings = EmbeddingSettings(device=args.device, cache_dir=str(cache))
    model = ModelSettings(args.model, "random", args.seed)
    run_embed(output, model=model, settings=settings, fasta=fasta)


def split_old_new(records, fraction: float, seed: int):
    """(old, new): a seeded random `fraction` of the records is new."""
    new = set(random.Random(seed).sample(range(len(records)), round(fraction * len(records))))
    return [r for i, r in enumerate(records) if i not in new], [records[i] for i in sorted(new)]


def time_runs(args, work: Path, records, old, device) -> dict[str, list[float]]:
    """Seconds of each full and incremental run (outputs `full.npz`, `incremental.npz`)."""
    fasta = write_fasta(work / "all.fasta", records)
    seeded = work / "cache-old"
    seconds, _ = _common.timed(
        lambda: copra_embed(args, write_fasta(work / "old.fasta", old), work / "old.npz", seeded),
        device,
    )
    print(f"cache of the {len(old)} old sequences built in {seconds:.1f} s (not timed below)")
    times = {FULL: [], INCREMENTAL: []}
    for repeat in range(args.repeats):
        caches = {FULL: work / f"empty-{repeat}", INCREMENTAL: work / f"cached-{repeat}"}
        shutil.copytree(seeded, caches[INCREMENTAL])
        for name in list(times) if repeat % 2 == 0 else list(times)[::-1]:
            output = work / ("full.npz" if name == FULL else "incremental.npz")
            cache = caches[name]
            elapsed, _ = _common.timed(lambda: copra_embed(args, fasta, output, cache), device)  # noqa: B023
            times[name].append(elapsed)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {t[-1]:.1f} s" for n, t in times.items()))
    return times


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_options(parser, sequences=1000, repeats=3)
    parser.add_argument("--new-fraction", type=float, default=0.1, help="share of new sequences")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    import numpy as np

    from copra.embed import read_embeddings

    args = parse_args(argv)
    device, records = _common.start(args)
    old, new = split_old_new(records, args.new_fraction, args.seed)
    print(f"{args.model} (random weights, seed {args.seed}), device {device}")
    print(f"machine: {_common.machine(device)}")
    print(
        f"{len(records)} sequences of {args.fasta.name} ({sum(len(s) for _, s in records)} "
        f"residues); {len(old)} cached before the incremental run, {len(new)} new"
    )
    with tempfile.TemporaryDirectory(prefix="embed-incremental-") as folder:
        work = Path(folder)
        times = time_runs(args, work, records, old, device)
        full_ids, full, _ = read_embeddings(work / "full.npz")
        ids, incremental, _ = read_embeddings(work / "incremental.npz")
    assert ids == full_ids == [name for name, _ in records]
    reference = _common.median(times[FULL])
    rows = [
        {
            "run": name,
            "median_s": round(_common.median(t), 2),
            "ratio_to_full": round(_common.median(t) / reference, 3),
        }
        for name, t in times.items()
    ]
    print(_common.format_table(rows))
    ratio = _common.median(times[INCREMENTAL]) / reference
    print(
        f"incremental / full: {ratio:.3f} (target <= {TARGET}: "
        f"{'met' if ratio <= TARGET else 'NOT met'})"
    )
    print(f"max |incremental - full| over all vectors: {np.abs(full - incremental).max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
