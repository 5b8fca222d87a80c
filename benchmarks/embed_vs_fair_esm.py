"""`copra embed` against fair-esm's reference extraction on the same checkpoint and sequences.

The reference is the loop of fair-esm's `scripts/extract.py` (mean representations): a
`FastaBatchedDataset`, `get_batch_indices(4096, extra_toks_per_seq=1)`, a DataLoader with the
alphabet's batch converter (truncation at 1022), `model(tokens, repr_layers=[layer])` under
`torch.no_grad()`, and the mean over residues 1..len. copra is `embed_sequences` (the computation
of `copra embed` without its cache and file I/O), with its default settings.

The subset is cut into `--slices` parts, and each part runs through both methods in turn (the
order alternating), so a change in machine load hits both alike; a repeat's time is the sum over
the parts. Vectors are compared for every sequence of at most 1022 residues (fair-esm truncates
longer ones, copra can window them).

`--levers N` also times the speed-ups one by one on the first N sequences of the subset.

    .venv/bin/python benchmarks/embed_vs_fair_esm.py [--sequences 2000] [--device cuda]
"""

import argparse
import contextlib
import sys

import _common

TRUNCATION = 1022
TOKS_PER_BATCH = 4096
TOLERANCE = 1e-4


def fair_esm_extract(model, alphabet, records, device, layer, forward=None, grad=None):
    """Mean representations, as fair-esm's extract.py computes them; vectors in input order.

    `forward(model, tokens, layer)` and the gradient context `grad` are the levers' hooks;
    by default `model(...)["representations"][layer]` under `torch.no_grad()`, as in extract.py.
    """
    import esm
    import numpy as np
    import torch

    labels = [str(i) for i in range(len(records))]
    dataset = esm.FastaBatchedDataset(labels, [sequence for _, sequence in records])
    batches = dataset.get_batch_indices(TOKS_PER_BATCH, extra_toks_per_seq=1)
    loader = torch.utils.data.DataLoader(
        dataset, collate_fn=alphabet.get_batch_converter(TRUNCATION), batch_sampler=batches
    )
    vectors = [None] * len(records)
    with (grad or torch.no_grad)():
        for labels, strs, tokens in loader:
            tokens = tokens.to(device, non_blocking=True)
            if forward is None:
                reps = model(tokens, repr_layers=[layer])["representations"][layer]
            else:
                reps = forward(model, tokens, layer)
            reps = reps.to(device="cpu")
            for i, label in enumerate(labels):
                length = min(TRUNCATION, len(strs[i]))
                vectors[int(label)] = reps[i, 1 : length + 1].mean(0).clone().float().numpy()
    return np.stack(vectors)


def copra_embed(backbone, records, device):
    """copra's vectors: `embed_sequences` with the default embedding settings."""
    from copra.embed import embed_sequences
    from copra.settings import EmbeddingSettings

    settings = EmbeddingSettings(device=device.type)
    return embed_sequences(backbone, [s for _, s in records], settings)


def max_difference(records, got, expected) -> float:
    """The largest |got - expected| over the sequences fair-esm does not truncate."""
    import numpy as np

    keep = np.array([len(s) <= TRUNCATION for _, s in records])
    return float(np.abs(got[keep] - expected[keep]).max()) if keep.any() else 0.0


def compare(args, backbone, records, device) -> tuple[list[dict], float]:
    """Table rows (median time, residues/s) of both methods, and their largest difference."""
    model, layer = backbone.model.to(device), backbone.num_layers
    methods = {
        "fair-esm extract.py": lambda part: fair_esm_extract(
            model, backbone.alphabet, part, device, layer
        ),
        "copra embed": lambda part: copra_embed(backbone, part, device),
    }
    for method in methods.values():  # warm-up: thread pools, kernels, rotary tables
        method(records[:8])
    slices = [records[i :: args.slices] for i in range(args.slices)]
    totals = {name: [] for name in methods}
    difference = 0.0
    for repeat in range(args.repeats):
        seconds = dict.fromkeys(methods, 0.0)
        for number, part in enumerate(slices):
            order = list(methods) if (repeat + number) % 2 == 0 else list(methods)[::-1]
            vectors = {}
            for name in order:
                run = methods[name]
                elapsed, vectors[name] = _common.timed(lambda r=run, p=part: r(p), device)
                seconds[name] += elapsed
            difference = max(difference, max_difference(part, *vectors.values()))
        for name in methods:
            totals[name].append(seconds[name])
        print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {s:.1f} s" for n, s in seconds.items()))
    residues = sum(len(s) for _, s in records)
    reference = _common.median(totals["fair-esm extract.py"])
    rows = [
        {
            "method": name,
            "median_s": round(_common.median(times), 2),
            "residues_per_s": round(residues / _common.median(times)),
            "speedup": round(reference / _common.median(times), 2),
        }
        for name, times in totals.items()
    ]
    return rows, difference


@contextlib.contextmanager
def instance_forward(modules, forward):
    """Within the block, each module's forward is `forward(module, *args, **kwargs)`."""
    for module in modules:
        module.forward = lambda *a, _m=module, **k: forward(_m, *a, **k)
    try:
        yield
    finally:
        for module in modules:
            del module.forward


def sdpa_in_fair_esm_layout(attention, query, key, value, key_padding_mask=None, **_):
    """fair-esm's MultiheadAttention call, (T, B, E) in and out, through copra's SDPA attention."""
    from copra.fast_esm import sdpa_attention

    out = sdpa_attention(attention, query.transpose(0, 1), key_padding_mask)
    return out.transpose(0, 1), None


def fast_layer_in_fair_esm_layout(layer, x, self_attn_padding_mask=None, **_):
    """fair-esm's TransformerLayer call, (T, B, E) in and out, through copra's fast_layer."""
    from copra.fast_esm import fast_layer

    return fast_layer(layer, x.transpose(0, 1), self_attn_padding_mask).transpose(0, 1), None


def levers(args, backbone, records, device) -> list[dict]:
    """Each speed-up added in turn to fair-esm's loop, on `records`; one row per step."""
    import torch

    from copra.fast_esm import esm2_representation

    model, alphabet, layer = backbone.model.to(device), backbone.alphabet, backbone.num_layers
    layers = list(model.layers)
    attentions = [block.self_attn for block in layers]

    def extract(**kwargs):
        return lambda: fair_esm_extract(model, alphabet, records, device, layer, **kwargs)

    def patched(modules, forward, **kwargs):
        def run():
            with instance_forward(modules, forward):
                return extract(grad=torch.inference_mode, **kwargs)()

        return run

    copra = "+ copra's batches = copra embed"
    steps = {
        "fair-esm extract.py (no_grad)": extract(),
        "+ inference_mode": extract(grad=torch.inference_mode),
        "+ SDPA attention": patched(attentions, sdpa_in_fair_esm_layout),
        "+ (B, T, E) blocks, fused GELU": patched(layers, fast_layer_in_fair_esm_layout),
        "+ no LM head (esm2_representation)": extract(
            grad=torch.inference_mode, forward=esm2_representation
        ),
        copra: lambda: copra_embed(backbone, records, device),
    }
    threads = torch.get_num_threads()
    other = 1 if threads > 1 else 2
    times = {name: [] for name in steps} | {f"copra embed, {other} thread(s)": []}
    expected = None
    for _ in range(args.repeats):
        for name, run in steps.items():
            elapsed, vectors = _common.timed(run, device)
            times[name].append(elapsed)
            expected = vectors if expected is None else expected
            if device.type == "cpu":  # float32 throughout: every step gives the same vectors
                assert max_difference(records, vectors, expected) < TOLERANCE, name
        torch.set_num_threads(other)
        times[f"copra embed, {other} thread(s)"].append(_common.timed(steps[copra], device)[0])
        torch.set_num_threads(threads)
    residues = sum(len(s) for _, s in records)
    first = _common.median(next(iter(times.values())))
    return [
        {
            "step": name,
            "median_s": round(_common.median(t), 2),
            "residues_per_s": round(residues / _common.median(t)),
            "speedup": round(first / _common.median(t), 2),
        }
        for name, t in times.items()
    ]


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_options(parser, sequences=500, repeats=1)
    parser.add_argument("--slices", type=int, default=4, help="parts run in turn (load changes)")
    parser.add_argument("--levers", type=int, default=0, help="time each speed-up on N sequences")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device, records = _common.start(args)
    backbone = _common.backbone(args)
    lengths = [len(s) for _, s in records]
    print(f"{args.model} (random weights, seed {args.seed}), last layer, device {device}")
    print(f"machine: {_common.machine(device)}")
    print(
        f"{len(records)} sequences of {args.fasta.name} ({sum(lengths)} residues, "
        f"{min(lengths)}-{max(lengths)} long; {sum(n > TRUNCATION for n in lengths)} over "
        f"{TRUNCATION}), {args.slices} slices, {args.repeats} repeat(s)"
    )
    rows, difference = compare(args, backbone, records, device)
    print(_common.format_table(rows))
    print(f"speedup of copra embed over fair-esm: {rows[0]['median_s'] / rows[1]['median_s']:.2f}")
    exact = device.type == "cpu"
    verdict = ("OK" if difference < TOLERANCE else "FAIL") if exact else "bf16, not compared"
    print(f"max |copra - fair-esm| over sequences <= {TRUNCATION}: {difference:.2e} ({verdict})")
    if args.levers:
        print(f"\nlevers on the first {args.levers} sequences, each added to the one above:")
        print(_common.format_table(levers(args, backbone, records[: args.levers], device)))
    return 1 if exact and difference >= TOLERANCE else 0


if __name__ == "__main__":
    sys.exit(main())
