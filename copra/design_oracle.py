"""The oracle that scores designs: ridge regression on one-hot residues of the designed
positions and their pairwise products, fitted on every measured variant (features unlike the
proxy's), with its held-out Spearman; saved as JSON (no pickle)."""

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.stats import spearmanr

from copra.atomic import write_text

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)


def site_codes(variants: list[str]) -> np.ndarray:
    """(n, P) indices into AMINO_ACIDS of each variant's residues at the designed positions."""
    lookup = {residue: i for i, residue in enumerate(AMINO_ACIDS)}
    return np.array([[lookup[r] for r in v] for v in variants], dtype=np.int64).reshape(
        len(variants), -1
    )


def pairwise_features(variants: list[str]) -> sparse.csr_matrix:
    """One-hot of every designed position (P x 20) and of every pair of them (P(P-1)/2 x 400)."""
    codes = site_codes(variants)
    n, sites = codes.shape
    columns = [codes[:, p] + 20 * p for p in range(sites)]
    offset = 20 * sites
    for a, b in itertools.combinations(range(sites), 2):
        columns.append(offset + 20 * codes[:, a] + codes[:, b])
        offset += 400
    cols = np.stack(columns, axis=1).ravel()
    rows = np.repeat(np.arange(n), len(columns))
    return sparse.csr_matrix((np.ones(cols.size), (rows, cols)), shape=(n, offset))


def _ridge(x, y, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge with an intercept; conjugate gradients on the sparse features (no dense Gram, so
    many positions stay affordable), deterministic."""
    from sklearn.linear_model import Ridge

    fitted = Ridge(alpha=alpha, solver="sparse_cg", tol=1e-8).fit(x, y)
    return fitted.coef_, float(fitted.intercept_)


@dataclass
class Oracle:
    positions: list[int]
    coefficients: np.ndarray
    intercept: float
    alpha: float
    held_out_spearman: float

    def predict(self, variants: list[str]) -> np.ndarray:
        """Scores of variants given as their residues at the designed positions ("VDGV")."""
        return pairwise_features(variants) @ self.coefficients + self.intercept

    def save(self, path) -> None:
        record = {
            "features": "one-hot of each designed position and of each pair of them",
            "positions": self.positions,
            "alpha": self.alpha,
            "held_out_spearman": self.held_out_spearman,
            "intercept": self.intercept,
            "coefficients": self.coefficients.tolist(),
        }
        write_text(path, json.dumps(record) + "\n")

    @classmethod
    def load(cls, path) -> "Oracle":
        record = json.loads(Path(path).read_text())
        return cls(
            record["positions"],
            np.asarray(record["coefficients"]),
            record["intercept"],
            record["alpha"],
            record["held_out_spearman"],
        )


def _spearman(x, y, fitting, scored, alpha: float) -> float:
    coefficients, intercept = _ridge(x[fitting], y[fitting], alpha)
    return float(spearmanr(x[scored] @ coefficients + intercept, y[scored]).statistic)


def fit_oracle(variants: list[str], labels, splits, positions: list[int]) -> Oracle:
    """The alpha of ALPHAS best on the valid rows (Spearman, fitted on train), its Spearman on
    the test rows (fitted on train and valid; the valid rows when there is no test split), then
    the oracle refitted with it on every row. `splits`: the task's split of each row."""
    x, y = pairwise_features(variants), np.asarray(labels, dtype=np.float64)
    splits = np.asarray(splits)
    train, valid, test = (splits == name for name in ("train", "valid", "test"))
    chosen = {a: _spearman(x, y, train, valid, a) for a in ALPHAS}
    alpha = max(ALPHAS, key=lambda a: (np.nan_to_num(chosen[a], nan=-2.0), -a))
    held_out = _spearman(x, y, train | valid, test, alpha) if test.any() else chosen[alpha]
    coefficients, intercept = _ridge(x, y, alpha)
    return Oracle(positions, coefficients, intercept, alpha, held_out)
