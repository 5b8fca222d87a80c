"""Designs per second of every gradient design method (BIB, BDI, forward, backward, gradient
ascent) on GB1, the share of their time in the LM's forward and backward passes, and BIB's time
over gradient ascent's for the same steps (target: at most 3x).

The real case: GB1's variants (`../shared/data/gb1/sampled.csv`, 265 residues, the four sites
38, 39, 40, 53), the lower half's `--offline` variants (seeded sample) embedded by the frozen
ESM-2 (seeded random weights) for the closed-form proxy, and the `--starts` best of them moved
for `--steps` Adam steps by copra's own `Designer`. The methods run round-robin `--repeats`
times, the order rotating each round, so a change of machine load hits all alike; the median
over rounds is reported. `lm` is the time inside the LM (the soft-embedding forward and each
`autograd.grad` through it), the rest is losses, Adam and the bi-level updates.

    .venv/bin/python benchmarks/design_speed.py [--starts 16] [--steps 5] [--repeats 3]
        [--offline 64] [--threads N] [--device cpu|cuda] [--model esm2_t6_8M_UR50D]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
GB1 = ROOT.parent / "shared" / "data" / "gb1" / "sampled.csv"
SITES = [38, 39, 40, 53]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="esm2_t6_8M_UR50D")
    parser.add_argument("--starts", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--offline", type=int, default=64)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import torch

    from copra.backbone import load_backbone
    from copra.design_data import lm_features
    from copra.design_methods import METHODS, Designer, SoftSequences
    from copra.design_proxy import Proxy

    if args.threads:
        torch.set_num_threads(args.threads)
    if not GB1.is_file():
        sys.exit(f"{GB1} not found: the benchmark needs the project's shared data")
    frame = pd.read_csv(GB1)
    lower = frame[frame.target <= frame.target.median()]
    offline = lower.sample(args.offline, random_state=0).sort_values("target")
    backbone = load_backbone(args.model, "random", seed=0)
    device = torch.device(args.device)
    features = lm_features(backbone, offline.sequence.tolist(), device)
    proxy = Proxy.fit(features, offline.target.to_numpy()).to(device)
    starts = offline.sequence.tolist()[-args.starts :]
    soft = SoftSequences(backbone, starts, SITES, device)
    designer = Designer(soft, proxy, args.steps, rate=0.1, eta=0.5)
    codes = soft.start_codes()
    names = list(METHODS)
    seconds = {name: [] for name in names}
    lm = {name: [] for name in names}
    designer.run(METHODS["gradient_ascent"], codes, torch.Generator().manual_seed(0))  # warm-up
    for round_ in range(args.repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            began = time.perf_counter()
            run = designer.run(METHODS[name], codes, torch.Generator().manual_seed(0))
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - began)
            lm[name].append(run.lm_seconds)
    print(
        f"GB1, {args.model} (random weights), {args.starts} starts x {args.steps} steps, "
        f"{args.offline} offline variants, {device}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}"
    )
    print(
        f"{'method':<16} {'seconds':>8} {'designs/s':>10} {'lm share':>9} {'x gradient_ascent':>18}"
    )
    reference = statistics.median(seconds["gradient_ascent"])
    for name in names:
        took = statistics.median(seconds[name])
        share = float(np.median(np.array(lm[name]) / np.array(seconds[name])))
        print(
            f"{name:<16} {took:>8.2f} {args.starts / took:>10.2f} {share:>9.1%} "
            f"{took / reference:>18.2f}"
        )
    ratio = statistics.median(seconds["bib"]) / reference
    print(f"bib / gradient_ascent: {ratio:.2f} (target: at most 3)")


if __name__ == "__main__":
    main()
