# SDCoNet and its ablations: train (resumable; checkpoints live beside the completion marker so a
# killed job resumes instead of restarting), then evaluate on the test partition on the HR grid.
# Both read the run's run_spec.json (runspec.smk); the inputs below are for the DAG only.


rule train_sdconet:
    input:
        spec=spec_path,
        parts=multiext(f"{R}/data/{{dataset}}/partition/", "train.json", "val.json", "test.json"),
        tiles=f"{R}/data/{{dataset}}/tiles",
        lr=sdconet_lr_input,
        weights=weights_manifests,  # the staged ImageNet Swin-T when the spec names it (weights.smk)
    output:
        done=f"{R}/{{dataset}}/{{degradation}}/{{method,{SDC_RE}}}/seed{{seed}}/train/complete.json",
    log:
        "logs/sdconet/{dataset}/{degradation}/{method}/seed{seed}/train.log",
    benchmark:
        f"{R}/benchmarks/sdconet/{{dataset}}/{{degradation}}/{{method}}/seed{{seed}}/train.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=1,
    script:
        "../scripts/train_sdconet.py"


rule evaluate_sdconet:
    input:
        spec=spec_path,
        done=f"{R}/{{dataset}}/{{degradation}}/{{method}}/seed{{seed}}/train/complete.json",
    output:
        metrics=f"{R}/{{dataset}}/{{degradation}}/{{method,{SDC_RE}}}/seed{{seed}}/metrics.json",
        detections=f"{R}/{{dataset}}/{{degradation}}/{{method,{SDC_RE}}}/seed{{seed}}/detections.json",
    params:
        n_boot=config["report"]["bootstrap"],
        protocol=config["evaluation"]["protocol"],
    log:
        "logs/sdconet/{dataset}/{degradation}/{method}/seed{seed}/evaluate.log",
    benchmark:
        f"{R}/benchmarks/sdconet/{{dataset}}/{{degradation}}/{{method}}/seed{{seed}}/evaluate.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    script:
        "../scripts/evaluate_sdconet.py"
