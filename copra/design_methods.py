"""Offline design by gradients through a frozen LM: logits over the 20 amino acids at the
designed positions, fed to the LM as a straight-through soft embedding, moved by Adam on
BIB's losses (or its baselines'). All designs of a batch are independent."""

import logging
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from copra.design_oracle import AMINO_ACIDS
from copra.design_proxy import Proxy
from copra.fast_esm import esm2_representation
from copra.protein_model import mean_pool

log = logging.getLogger(__name__)
BETAS, EPS = (0.9, 0.999), 1e-8


@dataclass(frozen=True)
class DesignMethod:
    """A gradient method: which losses it follows and whether eta and the rate adapt."""

    name: str
    losses: tuple[str, ...]  # of "forward", "backward", "proxy"
    learns_eta: bool = False
    adaptive_rate: bool = False


METHODS = {
    "bib": DesignMethod("bib", ("forward", "backward"), learns_eta=True, adaptive_rate=True),
    "bdi": DesignMethod("bdi", ("forward", "backward")),
    "forward": DesignMethod("forward", ("forward",)),
    "backward": DesignMethod("backward", ("backward",)),
    "gradient_ascent": DesignMethod("gradient_ascent", ("proxy",)),
}
RANDOM = "random"  # mutants at the Hamming distances of another method's designs


def straight_through(logits: torch.Tensor) -> torch.Tensor:
    """onehot(argmax Z) - sg(softmax Z) + softmax Z: the one-hot forward, softmax's gradient."""
    soft = logits.softmax(-1)
    hard = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


class SoftSequences:
    """The frozen LM's mean-pooled last layer of the starts with their designed positions
    replaced by soft one-hots (through the token-embedding matrix)."""

    def __init__(self, backbone, starts: list[str], positions: list[int], device):
        self.model = backbone.model.to(device).eval()
        self.alphabet, self.layer = backbone.alphabet, backbone.num_layers
        converter = self.alphabet.get_batch_converter()
        self.tokens = converter([("", s) for s in starts])[2].to(device)
        self.columns = torch.tensor(positions, device=device) + int(self.alphabet.prepend_bos)
        residues = [self.alphabet.get_idx(a) for a in AMINO_ACIDS]
        self.residue_tokens = torch.tensor(residues, device=device)
        self.lm_seconds = 0.0

    def start_codes(self) -> torch.Tensor:
        """(S, P): each start's residue index (into AMINO_ACIDS) at each designed position."""
        lookup = torch.full((len(self.alphabet.all_toks),), -1, device=self.tokens.device)
        lookup[self.residue_tokens] = torch.arange(len(AMINO_ACIDS), device=self.tokens.device)
        return lookup[self.tokens[:, self.columns]]

    def features(self, one_hot: torch.Tensor) -> torch.Tensor:
        """(S, d) float64 features of the starts with `one_hot` (S, P, 20) at the positions."""
        began = time.perf_counter()
        table = self.model.embed_tokens.weight
        embedded = self.model.embed_tokens(self.tokens)
        soft = one_hot.to(table.dtype) @ table[self.residue_tokens]
        embedded = embedded.index_copy(1, self.columns, soft)
        reps = esm2_representation(self.model, self.tokens, self.layer, embedded=embedded)
        pooled = mean_pool(reps, self.tokens, self.alphabet).double()
        self.lm_seconds += time.perf_counter() - began
        return pooled

    def gradient(self, loss: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        began = time.perf_counter()
        (grad,) = torch.autograd.grad(loss.sum(), logits, retain_graph=True)
        self.lm_seconds += time.perf_counter() - began
        return grad


def initial_logits(codes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """N(0, 0.01) logits whose argmax is the start's residue (its entry swapped with the max),
    as in the reference code."""
    logits = torch.randn(*codes.shape, len(AMINO_ACIDS), generator=generator) * 0.01
    logits = logits.to(codes.device)
    top = logits.argmax(-1, keepdim=True)
    at_top, at_start = logits.gather(-1, top), logits.gather(-1, codes[..., None])
    logits.scatter_(-1, top, at_start)
    logits.scatter_(-1, codes[..., None], at_top)
    return logits


class Adam:
    """Adam over a batch of designs with a learning rate per design (BIB adapts each one's)."""

    def __init__(self, like: torch.Tensor):
        self.m, self.v, self.t = torch.zeros_like(like), torch.zeros_like(like), 0

    def direction(self, grad: torch.Tensor):
        """The next step's moments and bias-corrected direction m^ / (sqrt(v^) + eps)."""
        m = BETAS[0] * self.m + (1 - BETAS[0]) * grad
        v = BETAS[1] * self.v + (1 - BETAS[1]) * grad**2
        t = self.t + 1
        direction = (m / (1 - BETAS[0] ** t)) / ((v / (1 - BETAS[1] ** t)).sqrt() + EPS)
        return m, v, direction

    def step(self, value: torch.Tensor, grad: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
        self.m, self.v, direction = self.direction(grad)
        self.t += 1
        return value - rate.view(-1, *([1] * (value.dim() - 1))) * direction


def per_design(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The dot product of two (S, P, 20) gradients, design by design."""
    return (a * b).flatten(1).sum(-1)


@dataclass
class DesignRun:
    """A method's result: its final logits (S, P, 20) and their argmax codes (S, P), the mean
    eta and learning rate of every step, its time and the LM's share of it."""

    logits: torch.Tensor
    codes: torch.Tensor
    eta: torch.Tensor
    rate: torch.Tensor
    seconds: float
    lm_seconds: float


class Designer:
    """Moves the starts' logits by one method's rule for `steps` Adam steps."""

    def __init__(self, soft: SoftSequences, proxy: Proxy, steps: int, rate: float, eta: float):
        self.soft, self.proxy = soft, proxy
        self.steps, self.base_rate, self.eta0 = steps, rate, eta

    def gradients(self, method: DesignMethod, logits: torch.Tensor) -> dict:
        features = self.soft.features(straight_through(logits))
        losses = {
            "forward": self.proxy.forward_loss,
            "backward": self.proxy.backward_loss,
            "proxy": lambda x: -self.proxy.score(x),
            "aux": self.proxy.aux_score,  # its gradient itself (not a loss's)
        }
        wanted = [*method.losses, *(["aux"] if method.learns_eta or method.adaptive_rate else [])]
        return {name: self.soft.gradient(losses[name](features), logits) for name in wanted}

    def run(self, method: DesignMethod, codes: torch.Tensor, generator) -> DesignRun:
        began, lm_before = time.perf_counter(), self.soft.lm_seconds
        logits = initial_logits(codes, generator).requires_grad_(True)
        count = codes.shape[0]
        eta = torch.full((count,), self.eta0, device=codes.device)
        rate = torch.full((count,), self.base_rate, device=codes.device)
        adam, eta_adam = Adam(logits), Adam(eta)
        etas, rates = [], []
        for t in range(self.steps):
            grads = self.gradients(method, logits)
            if method.learns_eta:  # one-step look-ahead: d f_aux / d eta
                shift = self.base_rate * (grads["forward"] - grads["backward"])
                eta_grad = per_design(grads["aux"], shift)
                eta = eta_adam.step(eta, eta_grad, torch.full_like(eta, self.base_rate))
                eta = eta.clamp(0.0, 1.0)
            grad = self.combined(method, grads, eta)
            if method.adaptive_rate and t >= 1:
                _, _, direction = adam.direction(grad)
                update = per_design(grads["aux"], direction)
                rate = (self.base_rate - 0.01 * update).clamp(1e-4, 0.5)
            with torch.no_grad():
                logits = adam.step(logits.detach(), grad, rate).requires_grad_(True)
            etas.append(eta.mean().item())
            rates.append(rate.mean().item())
            log.info(
                "%s step %d/%d: eta %.3f, rate %.4f",
                method.name,
                t + 1,
                self.steps,
                etas[-1],
                rates[-1],
            )
        return DesignRun(
            logits.detach(),
            logits.detach().argmax(-1),
            torch.tensor(etas),
            torch.tensor(rates),
            time.perf_counter() - began,
            self.soft.lm_seconds - lm_before,
        )

    @staticmethod
    def combined(method: DesignMethod, grads: dict, eta: torch.Tensor) -> torch.Tensor:
        if len(method.losses) == 1:
            return grads[method.losses[0]]
        weight = eta.view(-1, 1, 1).to(grads["forward"].dtype)
        return weight * grads["forward"] + (1 - weight) * grads["backward"]

    def proxy_scores(self, codes: torch.Tensor) -> torch.Tensor:
        """The proxy's score (z units) of designs given by their codes (S, P)."""
        with torch.no_grad():
            one_hot = F.one_hot(codes, len(AMINO_ACIDS)).float()
            return self.proxy.score(self.soft.features(one_hot)).cpu()
