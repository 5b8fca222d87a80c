"""BIB's proxy: a linear head over frozen-LM features solved in closed form, and the forward and
backward losses of a design's features against the offline data (all in float64)."""

from dataclasses import dataclass

import torch

TARGET = 10.0  # y_h: the score a design is asked to reach, in z units of the offline labels
AUX_SEEDS = (1, 10, 100, 1000, 10000)  # the reference's five proxies (bootstrap resamples here)


def ridge_beta(features: torch.Tensor) -> torch.Tensor:
    """beta = 1e-6 tr(K) / n with K = Phi Phi^T (the reference code's regulariser)."""
    return 1e-6 * features.pow(2).sum() / features.shape[0]


def ridge_head(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """w = (Phi^T Phi + beta I)^-1 Phi^T y: the primal closed form, float64."""
    phi, y = features.double(), labels.double()
    gram = phi.T @ phi + ridge_beta(phi) * torch.eye(phi.shape[1], dtype=phi.dtype)
    return torch.linalg.solve(gram, phi.T @ y)


def ridge_head_dual(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The same head through the kernel: w = Phi^T (K + beta I)^-1 y (as the reference solves)."""
    phi, y = features.double(), labels.double()
    kernel = phi @ phi.T + ridge_beta(phi) * torch.eye(phi.shape[0], dtype=phi.dtype)
    return phi.T @ torch.linalg.solve(kernel, y)


def bootstrap_heads(features: torch.Tensor, labels: torch.Tensor, seeds=AUX_SEEDS) -> torch.Tensor:
    """(len(seeds), d): ridge heads on seeded bootstrap resamples of the offline rows: the
    auxiliary proxy's members, each a different fit (not one head five times)."""
    heads = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        rows = torch.randint(0, features.shape[0], (features.shape[0],), generator=generator)
        heads.append(ridge_head(features[rows], labels[rows]))
    return torch.stack(heads)


@dataclass
class Proxy:
    """The offline set's features and z-scored labels, the closed-form head on them and the
    auxiliary heads; `mean` and `std` turn z units back into label units."""

    features: torch.Tensor  # (n, d) float64
    labels: torch.Tensor  # (n,) z-scored
    head: torch.Tensor  # (d,)
    aux_heads: torch.Tensor  # (5, d)
    mean: float
    std: float

    @classmethod
    def fit(cls, features, labels) -> "Proxy":
        phi = torch.tensor(features, dtype=torch.float64)
        raw = torch.tensor(labels, dtype=torch.float64)
        mean, std = float(raw.mean()), float(raw.std())
        z = (raw - mean) / (std if std > 0 else 1.0)
        return cls(phi, z, ridge_head(phi, z), bootstrap_heads(phi, z), mean, std)

    def to(self, device) -> "Proxy":
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in vars(self).items()}
        return Proxy(**moved)

    def score(self, design: torch.Tensor) -> torch.Tensor:
        """The proxy's score of each design's features (B, d), in z units."""
        return design @ self.head

    def aux_score(self, design: torch.Tensor) -> torch.Tensor:
        """The auxiliary proxy: the mean of its heads, in label units (as the reference's)."""
        return (design @ self.aux_heads.T).mean(-1) * self.std + self.mean

    def forward_loss(self, design: torch.Tensor) -> torch.Tensor:
        """L_f per design: (phi_h^T w_l - y_h)^2, the data's proxy must score the design high."""
        return (self.score(design) - TARGET) ** 2

    def backward_loss(self, design: torch.Tensor) -> torch.Tensor:
        """L_b per design: mean_l (K_lh (K_hh + beta)^-1 y_h - y_l)^2, the design with its high
        score must explain the data (beta = 1e-6 K_hh, as for one row)."""
        k_hh = design.pow(2).sum(-1)
        coefficient = TARGET / (k_hh * (1 + 1e-6))
        predictions = (design @ self.features.T) * coefficient[:, None]
        return (predictions - self.labels[None, :]).pow(2).mean(-1)
