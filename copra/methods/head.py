"""`head`: a task head on cached embeddings of the frozen backbone (copra/head_baseline.py).

The cheapest method and the baseline: complex tasks train their affinity model on cached
per-residue embeddings the same way.
"""

from copra.methods.base import Method
from copra.methods.registry import register
from copra.settings import settings


@settings("head")
class HeadSettings:
    hidden: int
    dropout: float
    pair_combination: str
    learning_rate: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int


@register
class Head(Method):
    name = "head"
    description = "a task head on cached embeddings of the frozen backbone"
    sections = {"head": HeadSettings}
    cached_embeddings = complex_tasks = True
