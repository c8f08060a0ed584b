# Low-quality copies of the HR tiles (one per configured degradation) and their exports:
# ultralytics (LR labels = HR labels, normalised) and BasicSR paired HR/LR folders.


rule degrade:
    input:
        tiles=f"{R}/data/{{dataset}}/tiles",
    output:
        directory(f"{R}/data/{{dataset}}/{{degradation}}/lr"),
    params:
        deg=lambda wc: DEG[wc.degradation],
    log:
        "logs/data/{dataset}/{degradation}/degrade.log",
    benchmark:
        f"{R}/benchmarks/data/{{dataset}}/{{degradation}}/degrade.tsv"
    conda:
        ENV
    threads: data_threads
    resources:
        mem_mb=4000,
        runtime=120,
    script:
        "../scripts/degrade.py"


rule export_yolo_lr:
    input:
        lr=f"{R}/data/{{dataset}}/{{degradation}}/lr",
        parts=multiext(f"{R}/data/{{dataset}}/partition/", "train.json", "val.json", "test.json"),
    output:
        directory(f"{R}/data/{{dataset}}/{{degradation}}/yolo_lr"),
    params:
        images=lambda wc, input: input.lr,
    log:
        "logs/data/{dataset}/{degradation}/export_yolo_lr.log",
    benchmark:
        f"{R}/benchmarks/data/{{dataset}}/{{degradation}}/export_yolo_lr.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    script:
        "../scripts/export_yolo.py"


rule export_basicsr:
    input:
        tiles=f"{R}/data/{{dataset}}/tiles",
        lr=f"{R}/data/{{dataset}}/{{degradation}}/lr",
        parts=multiext(f"{R}/data/{{dataset}}/partition/", "train.json", "val.json", "test.json"),
    output:
        directory(f"{R}/data/{{dataset}}/{{degradation}}/basicsr"),
    log:
        "logs/data/{dataset}/{degradation}/export_basicsr.log",
    benchmark:
        f"{R}/benchmarks/data/{{dataset}}/{{degradation}}/export_basicsr.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    script:
        "../scripts/export_basicsr.py"
