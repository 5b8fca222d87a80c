# Pretrained weights for offline compute nodes (copra/weights.py): fetched once on the login node.


rule fetch_weights:
    output:
        checkpoint=f"{config['weights_dir']}/hub/checkpoints/{{model}}.pt",
        checksum=f"{config['weights_dir']}/hub/checkpoints/{{model}}.pt.sha256",
    log:
        "logs/fetch_weights/{model}.log",
    localrule: True
    conda:
        "../../envs/torch.yaml"
    params:
        config=config_json(*BACKBONE),
    shell:
        "copra fetch-weights --model {wildcards.model} --config-json {params.config:q} 2> {log}"
