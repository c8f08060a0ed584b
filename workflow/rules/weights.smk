# Pretrained weights (docs/weights.md): every published file that a configured run's initialisation names
# (model.swin.pretrained / frcnn.init / yolo.init: imagenet or coco) is staged once under {results_dir}/weights/ by
# a local rule, before any training job that reads it: copied from weights.dir or downloaded (weights.allow_download)
# on the machine that runs snakemake (compute nodes never download), checked against its recorded sha256, and
# described by a manifest that records its source. Runs with init scratch need none of this.
import re

localrules:
    stage_weights,
    weights,


wildcard_constraints:
    weights_file="|".join(re.escape(name) for name in pretrained.CATALOGUE),


rule stage_weights:
    output:
        weights=f"{WEIGHTS_DIR}/{{weights_file}}",
        manifest=f"{WEIGHTS_DIR}/{{weights_file}}.json",
    params:
        # what the file is: a changed URL or checksum stages it again (where it is copied from is not part of it)
        url=lambda wc: pretrained.CATALOGUE[wc.weights_file].url,
        sha256=lambda wc: (pretrained.CATALOGUE[wc.weights_file].sha256
                           or config["weights"]["sha256"].get(wc.weights_file)),
    log:
        "logs/weights/{weights_file}.log",
    conda:
        ENV
    script:
        "../scripts/stage_weights.py"


rule weights:
    input:
        weights_targets(),


onstart:
    weights_preflight(workflow.dag)
