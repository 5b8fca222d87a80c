"""The training methods by name: one module each, registered where it is defined.

Light to import (no torch or peft): Snakemake builds its DAG from the registry, and commands that
only read results start in a tenth of a second. Registration order is the order of the plots.
"""

import importlib

from copra.methods.registry import (
    ANALYSES,
    get,
    names,
    register,
    require,
    run_files,
    sections,
    suited,
    unregister,
)

BUILT_IN = (
    "head",
    "lora",
    "layer_drop",
    "adalora",
    "full",
)  # modules of copra/methods/, in plot order
for _module in BUILT_IN:
    importlib.import_module(f"copra.methods.{_module}")

__all__ = [
    "ANALYSES",
    "get",
    "names",
    "register",
    "require",
    "run_files",
    "sections",
    "suited",
    "unregister",
]
