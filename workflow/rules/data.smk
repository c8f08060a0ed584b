# fetch_raw downloads real datasets (allow_download): a local rule, so that it runs on the node that has the
# network, never on a compute node (docs/cluster.md).
localrules:
    fetch_raw,


# Data stage: raw (or a user's COCO json + images, source coco) -> COCO -> tiles -> partition -> HR export.
# Degraded copies: degrade.smk.


rule fetch_raw:
    output:
        directory(f"{R}/data/{{dataset}}/raw"),
    params:
        cfg=ds_cfg,
    log:
        "logs/data/{dataset}/fetch_raw.log",
    benchmark:
        f"{R}/benchmarks/data/{{dataset}}/fetch_raw.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    script:
        "../scripts/fetch_raw.py"


rule convert:
    input:
        raw_input,
    output:
        f"{R}/data/{{dataset}}/coco.json",
    params:
        source=lambda wc: ds_cfg(wc)["source"],
        root=dataset_root,
        annotations=lambda wc, input: input[0] if ds_cfg(wc)["source"] == "coco" else None,
    log:
        "logs/data/{dataset}/convert.log",
    benchmark:
        f"{R}/benchmarks/data/{{dataset}}/convert.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    script:
        "../scripts/convert.py"


rule split_tiles:
    input:
        coco=f"{R}/data/{{dataset}}/coco.json",
    output:
        directory(f"{R}/data/{{dataset}}/tiles"),
    params:
        root=dataset_root,
        tile=lambda wc: ds_cfg(wc)["tile"],
    log:
        "logs/data/{dataset}/split_tiles.log",
    benchmark:
        f"{R}/benchmarks/data/{{dataset}}/split_tiles.tsv"
    conda:
        ENV
    threads: data_threads
    resources:
        mem_mb=4000,
        runtime=240,
    script:
        "../scripts/split_tiles.py"


rule partition:
    input:
        tiles=f"{R}/data/{{dataset}}/tiles",
    output:
        train=f"{R}/data/{{dataset}}/partition/train.json",
        val=f"{R}/data/{{dataset}}/partition/val.json",
        test=f"{R}/data/{{dataset}}/partition/test.json",
    params:
        part=lambda wc: ds_cfg(wc)["partition"],
    log:
        "logs/data/{dataset}/partition.log",
    benchmark:
        f"{R}/benchmarks/data/{{dataset}}/partition.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/partition.py"


rule export_yolo_hr:
    input:
        tiles=f"{R}/data/{{dataset}}/tiles",
        parts=multiext(f"{R}/data/{{dataset}}/partition/", "train.json", "val.json", "test.json"),
    output:
        directory(f"{R}/data/{{dataset}}/yolo_hr"),
    params:
        images=lambda wc, input: f"{input.tiles}/images",
    log:
        "logs/data/{dataset}/export_yolo_hr.log",
    benchmark:
        f"{R}/benchmarks/data/{{dataset}}/export_yolo_hr.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    script:
        "../scripts/export_yolo.py"
