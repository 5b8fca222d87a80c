# The rank budgets of adaptive-rank runs (adalora, lingo): copra/rank_allocation.py.


rule gather_rank_allocation:
    input:
        adaptive_rank_files(),
    output:
        table="results/rank_allocation.tsv",
        figure=report(
            "results/figures/rank_allocation.png",
            caption="../report/rank_allocation.rst",
            category="Training",
        ),
        svg="results/figures/rank_allocation.svg",
    log:
        "logs/gather_rank_allocation.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "copra gather-rank-allocation --output {output.table} --figure {output.figure}"
        " {input} 2> {log}"
