"""copra: parameter-efficient fine-tuning of protein language models, as plain functions over files.

Each `copra <subcommand>` is a thin wrapper of one function in this package; the Snakemake rules in
`workflow/rules/` call those subcommands.
"""

__version__ = "0.1.0"
