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


# ---- methods (experiments sheet) -------------------------------------------------------------
import os
import sys

sys.path.insert(0, workflow.basedir)  # the in-repo packages, also when rules run under --use-conda
from benchcore.experiments import load_experiments  # noqa: E402
from data_prep.classes import CLASSES  # noqa: E402

def repo_path(path):
    """A config file path: as given when it exists (relative to the working directory), else in the repo."""
    if path is None or os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(workflow.basedir, path)


config["experiments"] = repo_path(config["experiments"])
config["sdconet"]["config"] = repo_path(config["sdconet"]["config"])
config["baselines"]["config"] = repo_path(config["baselines"]["config"])
config["report"]["reference"] = repo_path(config["report"]["reference"])
EXP = load_experiments(config["experiments"]).set_index("id", drop=False)
METHODS = config["methods"] or list(EXP.index)
_unknown = sorted(set(METHODS) - set(EXP.index))
if _unknown:
    raise ValueError(f"config key 'methods': unknown method id(s) {_unknown}; see {config['experiments']}")
SEEDS = config["seeds"]
MAIN_DEG = config["main_degradation"] or DEGRADATIONS[0]
if MAIN_DEG not in DEGRADATIONS:
    raise ValueError(f"config key 'main_degradation': {MAIN_DEG!r} is not a key of 'degradations'")
for _key in ("degradations", "methods"):
    _bad = sorted(set(config["sweep"][_key]) - set(DEGRADATIONS if _key == "degradations" else EXP.index))
    if _bad:
        raise ValueError(f"config key 'sweep.{_key}': unknown id(s) {_bad}")
SDCONET_METHODS = [m for m in METHODS if EXP.loc[m, "kind"] in ("sdconet", "ablation")]
SERIAL_METHODS = [m for m in METHODS if EXP.loc[m, "kind"] == "serial"]
ALL_METHOD_IDS = list(EXP.index)


wildcard_constraints:
    method="|".join(ALL_METHOD_IDS),
    seed=r"\d+",


def run_dir(wc):
    return f"{R}/{wc.dataset}/{wc.degradation}/{wc.method}/seed{wc.seed}"


def on_the_fly_lr(deg: str) -> bool:
    """True when SDCoNet can make its LR input in the model, exactly as the official code (x2 torch bicubic)."""
    d = config["degradations"][deg]
    return (d.get("scale", 2) == 2 and d.get("kernel", "torch-bicubic") == "torch-bicubic"
            and not d.get("blur") and not d.get("noise") and d.get("jpeg") is None)


def metrics_targets(methods, degradations):
    return [f"{R}/{ds}/{deg}/{m}/seed{s}/metrics.json"
            for ds in DATASETS for deg in degradations for m in methods for s in SEEDS]


def efficiency_targets():
    return [f"{R}/efficiency/{m}.json" for m in METHODS]


def sweep_targets():
    sw = config["sweep"]
    return metrics_targets([m for m in sw["methods"]], sw["degradations"])


def report_inputs():
    return (metrics_targets(METHODS, [MAIN_DEG]) + sweep_targets() + efficiency_targets())
# Regexes for wildcard constraints that keep the SDCoNet and serial rules disjoint.
SDC_RE = "|".join(i for i in EXP.index if EXP.loc[i, "kind"] in ("sdconet", "ablation"))
SERIAL_RE = "|".join(i for i in EXP.index if EXP.loc[i, "kind"] == "serial")


def image_set(wc):
    """The tiles a serial method's detector trains and is scored on: HR, LR or one SR model's output."""
    row = EXP.loc[wc.method]
    if row["input"] == "hr":
        return f"{R}/data/{wc.dataset}/tiles"
    if row["input"] == "lr":
        return f"{R}/data/{wc.dataset}/{wc.degradation}/lr"
    return f"{R}/{wc.dataset}/{wc.degradation}/sr/{row['sr_model']}/seed{wc.seed}/images"
