"""Shapley values of a trained adapter's layers: each layer's LoRA modules (or each layer and
module pair) are one player; a coalition's value is the validation metric, and separately minus
the validation loss, with only that coalition's adapters switched on.

Exact enumeration of all 2^n coalitions for few players; otherwise antithetic permutation
sampling (each permutation and its reverse) until the standard error of every player's value
falls under the tolerance. Every coalition is evaluated once.
"""

import itertools
import logging
import math
from dataclasses import asdict

import numpy as np
import pandas as pd
from tqdm import tqdm

from copra.atomic import write_table
from copra.errors import InputError
from copra.lora import lora_layers_by_block
from copra.provenance import write_manifest
from copra.settings import ModelSettings, ShapleySettings
from copra.trained_run import Scorer, load_finetuned, open_runs, shared_backbone

log = logging.getLogger(__name__)
KINDS = ("metric", "neg_loss")
PLAYERS = ("layers", "modules")
COLUMNS = [
    "task",
    "method",
    "seed",
    "player",
    "layer",
    "module",
    "value",
    "shapley",
    "stderr",
    "estimator",
    "permutations",
    "evaluations",
    "v_all",
    "v_none",
]


class CoalitionGame:
    """v(S) for coalitions of players: `switch(S)` then `evaluate()`, cached per coalition."""

    def __init__(self, players: list[str], switch, evaluate):
        self.players, self.switch, self.evaluate = players, switch, evaluate
        self.cache: dict[frozenset, dict[str, float]] = {}

    def value(self, coalition) -> dict[str, float]:
        coalition = frozenset(coalition)
        if coalition not in self.cache:
            self.switch(coalition)
            self.cache[coalition] = self.evaluate()
        return self.cache[coalition]


def exact_shapley(game: CoalitionGame) -> dict[str, np.ndarray]:
    """phi_i = sum over S without i of |S|! (n-|S|-1)! / n! (v(S + i) - v(S)), per value kind."""
    players, n = game.players, len(game.players)
    weight = [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    phi = {kind: np.zeros(n) for kind in KINDS}
    coalitions = [c for size in range(n + 1) for c in itertools.combinations(players, size)]
    for coalition in tqdm(coalitions, desc="coalitions", mininterval=10):
        game.value(coalition)
    for i, player in enumerate(players):
        others = [p for p in players if p != player]
        for size in range(n):
            for rest in itertools.combinations(others, size):
                with_i, without = game.value((*rest, player)), game.value(rest)
                for kind in KINDS:
                    phi[kind][i] += weight[size] * (with_i[kind] - without[kind])
    return phi


def marginals(game: CoalitionGame, order) -> dict[str, np.ndarray]:
    """Each player's marginal contribution when players join in `order`."""
    out = {kind: np.zeros(len(game.players)) for kind in KINDS}
    coalition, before = [], game.value(())
    for i in order:
        coalition.append(game.players[i])
        after = game.value(coalition)
        for kind in KINDS:
            out[kind][i] = after[kind] - before[kind]
        before = after
    return out


def sampled_shapley(game: CoalitionGame, settings: ShapleySettings):
    """Means and standard errors over antithetic permutation pairs; stops when the metric's
    largest standard error is under the tolerance (or at max_permutations pairs)."""
    rng = np.random.default_rng(settings.seed)
    samples = {kind: [] for kind in KINDS}
    progress = tqdm(desc="permutation pairs", mininterval=10)
    while True:
        order = rng.permutation(len(game.players))
        pair = [marginals(game, order), marginals(game, order[::-1])]
        for kind in KINDS:
            samples[kind].append((pair[0][kind] + pair[1][kind]) / 2)
        progress.update()
        count = len(samples["metric"])
        errors = {
            k: np.std(samples[k], axis=0, ddof=1) / math.sqrt(count)
            if count > 1
            else np.full(len(game.players), np.inf)
            for k in KINDS
        }
        if count >= settings.min_permutations and errors["metric"].max() < settings.tolerance:
            break
        if count >= settings.max_permutations:
            log.warning(
                "stopped at %d permutation pairs with standard error %.3g > %.3g",
                count,
                errors["metric"].max(),
                settings.tolerance,
            )
            break
    progress.close()
    means = {k: np.mean(samples[k], axis=0) for k in KINDS}
    return means, errors, 2 * count


def shapley_values(game: CoalitionGame, settings: ShapleySettings) -> pd.DataFrame:
    """Every player's value per kind: exact for few players, sampled otherwise."""
    if len(game.players) <= settings.max_exact_players:
        means, estimator, permutations = exact_shapley(game), "exact", 0
        errors = {kind: np.zeros(len(game.players)) for kind in KINDS}
    else:
        (means, errors, permutations), estimator = sampled_shapley(game, settings), "sampling"
    full, empty = game.value(game.players), game.value(())
    rows = []
    for kind in KINDS:
        for i, player in enumerate(game.players):
            rows.append(
                (
                    player,
                    kind,
                    means[kind][i],
                    errors[kind][i],
                    estimator,
                    permutations,
                    len(game.cache),
                    full[kind],
                    empty[kind],
                )
            )
    return pd.DataFrame(rows, columns=COLUMNS[3:4] + COLUMNS[6:])


def player_modules(model, players: str) -> dict[str, list]:
    """LoRA modules of each player: `layers` (one per block) or `modules` (block and module)."""
    if players not in PLAYERS:
        raise InputError(f"shapley.players {players!r} is not one of {', '.join(PLAYERS)}")
    groups = {}
    for block, modules in lora_layers_by_block(model).items():
        if players == "layers":
            groups[str(block)] = modules
            continue
        for module in modules:
            name = next(n for n, m in model.named_modules() if m is module)
            groups[f"{block}:{name.split(f'layers.{block}.', 1)[1]}"] = [module]
    return groups


def switcher(groups: dict[str, list]):
    def switch(coalition: frozenset) -> None:
        for player, modules in groups.items():
            for module in modules:
                module.enable_adapters(player in coalition)

    return switch


def run_shapley(
    run_dir,
    table_path,
    sequences_path,
    output,
    *,
    task: str,
    settings: ShapleySettings | None = None,
    model: ModelSettings | None = None,
) -> pd.DataFrame:
    """Shapley values of one adapter run's players on its validation split."""
    settings, model = settings or ShapleySettings(), model or ModelSettings()
    (run,) = open_runs([run_dir], "shapley")
    backbone = shared_backbone([run], model)
    scored = load_finetuned(run.folder, backbone)[0].float()
    scorer = Scorer(run, backbone, table_path, sequences_path, splits=("valid",))
    targets = run.targets

    def evaluate() -> dict[str, float]:
        scores = scorer.score(scored)["valid"]
        return {"metric": scores[targets.primary_metric], "neg_loss": -scores["loss"]}

    groups = player_modules(scored.backbone, settings.players)
    game = CoalitionGame(list(groups), switcher(groups), evaluate)
    values = shapley_values(game, settings)
    switcher(groups)(frozenset(groups))
    players = values.player.str.split(":", n=1, expand=True)
    values.insert(0, "task", task)
    values.insert(1, "method", run.manifest["method"])
    values.insert(2, "seed", run.manifest["seed"])
    values.insert(4, "layer", players[0].astype(int))
    values.insert(5, "module", players[1] if players.shape[1] > 1 else "all")
    values["value"] = values["value"].map(
        {"metric": targets.primary_metric, "neg_loss": "neg_loss"}
    )
    write_table(output, values)
    write_manifest(
        str(output).removesuffix(".tsv") + ".manifest.json",
        inputs=[table_path, sequences_path, run.adapter_folder / "adapter_model.safetensors"],
        settings=asdict(settings),
        run=str(run.folder),
        split="valid",
    )
    return values
