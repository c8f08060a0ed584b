# Serial baselines: SR model (BasicSR archs, or interpolation) -> detector (ultralytics YOLO, torchvision
# Faster R-CNN) trained on that pipeline's own upscaled training tiles, scored on the HR grid.
# Every rule reads its run's run_spec.json (runspec.smk); the other inputs are for the DAG only.
from baselines.sr_models import sr_model_names  # the SR registry (docs/recipes.md: a new SR model)

LEARNED_SR = "|".join(sr_model_names())


rule train_sr:
    input:
        spec=sr_spec_path,
        pairs=f"{R}/data/{{dataset}}/{{degradation}}/basicsr",
        weights=weights_manifests,  # the staged DIV2K file when the SR stage's spec names one (init div2k)
    output:
        done=f"{R}/{{dataset}}/{{degradation}}/sr/{{sr_model,{LEARNED_SR}}}/seed{{seed}}/model/complete.json",
    log:
        "logs/baselines/{dataset}/{degradation}/sr_{sr_model}/seed{seed}/train.log",
    benchmark:
        f"{R}/benchmarks/baselines/{{dataset}}/{{degradation}}/sr_{{sr_model}}/seed{{seed}}/train.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=1,
    script:
        "../scripts/train_sr.py"


rule super_resolve:
    input:
        spec=sr_spec_path,
        lr=f"{R}/data/{{dataset}}/{{degradation}}/lr",
        tiles=f"{R}/data/{{dataset}}/tiles",
        model=lambda wc: ([f"{R}/{wc.dataset}/{wc.degradation}/sr/{wc.sr_model}/seed{wc.seed}/model/complete.json"]
                          if wc.sr_model in LEARNED_SR.split("|") else []),
    output:
        directory(f"{R}/{{dataset}}/{{degradation}}/sr/{{sr_model,{LEARNED_SR}|bicubic|nearest}}/seed{{seed}}/images"),
    log:
        "logs/baselines/{dataset}/{degradation}/sr_{sr_model}/seed{seed}/infer.log",
    benchmark:
        f"{R}/benchmarks/baselines/{{dataset}}/{{degradation}}/sr_{{sr_model}}/seed{{seed}}/infer.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    script:
        "../scripts/super_resolve.py"


rule train_detector:
    input:
        spec=spec_path,
        images=image_set,
        parts=multiext(f"{R}/data/{{dataset}}/partition/", "train.json", "val.json", "test.json"),
        weights=weights_manifests,  # the staged ImageNet / COCO file when the spec names one (weights.smk)
    output:
        done=f"{R}/{{dataset}}/{{degradation}}/{{method,{SERIAL_RE}}}/seed{{seed}}/train/complete.json",
    log:
        "logs/baselines/{dataset}/{degradation}/{method}/seed{seed}/train.log",
    benchmark:
        f"{R}/benchmarks/baselines/{{dataset}}/{{degradation}}/{{method}}/seed{{seed}}/train.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=1,
    script:
        "../scripts/train_detector.py"


rule evaluate_detector:
    input:
        spec=spec_path,
        done=f"{R}/{{dataset}}/{{degradation}}/{{method}}/seed{{seed}}/train/complete.json",
        images=image_set,
        parts=multiext(f"{R}/data/{{dataset}}/partition/", "train.json", "val.json", "test.json"),
    output:
        metrics=f"{R}/{{dataset}}/{{degradation}}/{{method,{SERIAL_RE}}}/seed{{seed}}/metrics.json",
        detections=f"{R}/{{dataset}}/{{degradation}}/{{method,{SERIAL_RE}}}/seed{{seed}}/detections.json",
    params:
        n_boot=config["report"]["bootstrap"],
        protocol=config["evaluation"]["protocol"],
    log:
        "logs/baselines/{dataset}/{degradation}/{method}/seed{seed}/evaluate.log",
    benchmark:
        f"{R}/benchmarks/baselines/{{dataset}}/{{degradation}}/{{method}}/seed{{seed}}/evaluate.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    script:
        "../scripts/evaluate_detector.py"
