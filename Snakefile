# copra: from FASTA and label tables to trained models and an evaluation table.
import sys

from snakemake.utils import min_version

min_version("9.0")
sys.path.insert(0, workflow.basedir)
from copra.config import check_config_files, exit_on_input_error  # noqa: E402

# Every config file (this one, and each --configfile): a key given twice is an error.
config_files = [
    f"{workflow.basedir}/config.yaml",
    *workflow.config_settings.configfiles,
]
exit_on_input_error(check_config_files, config_files)


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo_data.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/data_summary.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/embedding_summary.smk"
include: "workflow/rules/head_baseline.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/complexes.smk"
include: "workflow/rules/lmc.smk"
include: "workflow/rules/merging.smk"
include: "workflow/rules/federated.smk"
include: "workflow/rules/shapley.smk"
include: "workflow/rules/pruning.smk"
include: "workflow/rules/rank_allocation.smk"
include: "workflow/rules/continual.smk"
include: "workflow/rules/design.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/papers.smk"
include: "workflow/rules/predict.smk"


rule all:
    default_target: True
    input:
        all_targets(),
