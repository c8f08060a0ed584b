# Path grammar and config helpers shared by every rule file.
from pathlib import Path

R = config["results_dir"]
DATASETS = list(config["datasets"])
DEGRADATIONS = list(config["degradations"])
ENV = "../envs/sdconet.yaml"
# Sub-folder of a fetched raw tree that holds the dataset's root.
RAW_SUBDIR = {"demo": "", "nwpu": "NWPU VHR-10 dataset", "dota": "", "hrrsd": ""}


wildcard_constraints:
    dataset="|".join(DATASETS),
    degradation="|".join(DEGRADATIONS),
    part="train|val|test",


def ds_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def dataset_root(wildcards):
    """The folder the converter reads: a user-given root, or the fetched raw tree."""
    cfg = ds_cfg(wildcards)
    if cfg.get("root"):
        return cfg["root"]
    sub = RAW_SUBDIR[cfg["source"]]
    return str(Path(R, "data", wildcards.dataset, "raw", sub))


def raw_input(wildcards):
    cfg = ds_cfg(wildcards)
    return [] if cfg.get("root") else [f"{R}/data/{wildcards.dataset}/raw"]


def data_targets():
    out = []
    for ds in DATASETS:
        out.append(f"{R}/data/{ds}/yolo_hr")
        for deg in DEGRADATIONS:
            out += [f"{R}/data/{ds}/{deg}/yolo_lr", f"{R}/data/{ds}/{deg}/basicsr"]
    return out
