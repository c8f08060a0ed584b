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


def data_threads(wildcards):
    """Worker processes of the data stage's parallel rules (split_tiles, degrade): 2; 1 for the embedded demo, whose
    dozen generated scenes take a second to tile, so that the job does not wait for both cores (e.g. while the
    efficiency job holds one)."""
    return 1 if config["datasets"][wildcards.dataset].get("source") == "demo" else 2


def dataset_root(wildcards):
    """The folder the converter reads: a coco dataset's images, a user-given root, or the fetched raw tree."""
    cfg = ds_cfg(wildcards)
    if cfg["source"] == "coco":
        return repo_path(cfg["images"])
    if cfg.get("root"):
        return cfg["root"]
    sub = RAW_SUBDIR[cfg["source"]]
    return str(Path(R, "data", wildcards.dataset, "raw", sub))


def raw_input(wildcards):
    cfg = ds_cfg(wildcards)
    if cfg["source"] == "coco":
        return [repo_path(cfg["annotations"])]
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
from data_prep.classes import dataset_classes  # noqa: E402

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


# ---- run specifications (docs/run_spec.md) ---------------------------------------------------
# Every run's settings are resolved by the packages' spec builders (benchcore.runspec, sdconet.spec,
# baselines.spec) and written to run_spec.json by the local rules in runspec.smk; the training and evaluation
# rules hand that file to one library entry point. Nothing below re-defaults a setting.
import copy  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402

from benchcore.runspec import degradation_of, write_spec  # noqa: E402
from baselines.spec import build_serial_spec, build_sr_spec  # noqa: E402
from sdconet.spec import build_spec as build_sdconet_spec, check_row_ids  # noqa: E402

DEG = {d: degradation_of(d, config["degradations"], "config key 'degradations'") for d in DEGRADATIONS}


def method_spec(dataset, degradation, method, seed, num_classes=1, class_names=None):
    """The run spec of one (dataset, degradation, method, seed); num_classes comes from the partition at job time
    (the DAG-parse check, the rules' params and their input paths use a placeholder: no setting depends on it).
    Resolved once per argument set while the DAG is built; callers get a copy."""
    names = tuple(class_names) if class_names is not None else None
    return copy.deepcopy(_method_spec(dataset, degradation, method, int(seed), num_classes, names))


@functools.lru_cache(maxsize=None)
def _method_spec(dataset, degradation, method, seed, num_classes, class_names):
    row = EXP.loc[method].to_dict()
    common = dict(results=R, dataset=dataset, degradation=DEG[degradation], row=row, seed=seed,
                  experiments=config["experiments"])
    if row["kind"] == "serial":
        return build_serial_spec(config_file=config["baselines"]["config"], sets=config["baselines"]["set"],
                                 **common)
    return build_sdconet_spec(config_file=config["sdconet"]["config"], sets=config["sdconet"]["set"],
                              rows=config["sdconet"]["rows"], num_classes=num_classes, class_names=class_names,
                              **common)


def sr_spec(dataset, degradation, sr_model, seed):
    return build_sr_spec(results=R, dataset=dataset, degradation=DEG[degradation], sr_model=sr_model,
                         seed=int(seed), config_file=config["baselines"]["config"], sets=config["baselines"]["set"])


def _check_specs():
    """Resolve every configured (degradation, method) and SR stage once at DAG parse time, so a typo anywhere in
    the config, the sheet, ``sdconet.set`` or ``baselines.set`` stops the run before its first job, in one line."""
    sweep = config["sweep"]
    pairs = {(d, m) for d in [MAIN_DEG] for m in METHODS} | {(d, m) for d in sweep["degradations"]
                                                            for m in sweep["methods"]}
    srs = set()
    where = workflow.configfiles[-1] if workflow.configfiles else "config/config.yaml"
    try:  # sdconet.rows may name any SDCoNet row of the sheet, run or not
        check_row_ids(config["sdconet"]["rows"], [i for i in EXP.index if EXP.loc[i, "kind"] != "serial"],
                      list(EXP.index))
    except ValueError as exc:
        raise WorkflowError(f"{where}: {exc}") from None
    for deg, method in sorted(pairs):
        try:
            spec = method_spec(DATASETS[0], deg, method, SEEDS[0])
        except (ValueError, KeyError) as exc:
            raise WorkflowError(f"{where}: method {method!r} at degradation {deg!r}: {exc}") from None
        if spec["sr_model"] and EXP.loc[method, "input"] == "sr":
            srs.add((deg, spec["sr_model"]))
    for deg, model in sorted(srs):
        try:
            sr_spec(DATASETS[0], deg, model, SEEDS[0])
        except (ValueError, KeyError) as exc:
            raise WorkflowError(f"{where}: SR stage {model!r} at degradation {deg!r}: {exc}") from None


from snakemake.exceptions import WorkflowError  # noqa: E402

_check_specs()


# ---- pretrained weights (docs/weights.md; the stage and its pre-flight check are in weights.smk) ---------------
import functools  # noqa: E402

from benchcore import weights as pretrained  # noqa: E402

WEIGHTS_DIR = f"{R}/weights"  # where the specs' init records point (build_*_spec's default under results_dir)


@functools.lru_cache(maxsize=None)
def run_weights(degradation, method):
    """Catalogue files a run's spec reads from WEIGHTS_DIR (init imagenet / coco); empty for scratch or a user file."""
    return tuple(pretrained.staged_files(method_spec(DATASETS[0], degradation, method, SEEDS[0])))


@functools.lru_cache(maxsize=None)
def sr_weights(degradation, sr_model):
    """Catalogue files an SR stage's spec reads from WEIGHTS_DIR (init div2k); empty for scratch, a user file or an
    interpolation."""
    return tuple(pretrained.staged_files(sr_spec(DATASETS[0], degradation, sr_model, SEEDS[0])))


def weights_manifests(wc):
    """Input of a training job (a run's, or an SR stage's: wildcard sr_model): the stage's manifest of each file its
    spec names (none for init scratch). ancient(): staging a verified file again (a new pin, a cleaned weights
    folder) does not retrain every run that reads it."""
    names = (sr_weights(wc.degradation, wc.sr_model) if hasattr(wc, "sr_model")
             else run_weights(wc.degradation, wc.method))
    return [ancient(str(pretrained.manifest_path(WEIGHTS_DIR, f))) for f in names]


def _check_weights():
    """Parse time: the sha256 pins, and {file: method ids} of what the configured runs need. Whether each file can be
    had is checked by onstart (weights.smk), in real runs only: a dry run still shows the DAG."""
    where = workflow.configfiles[-1] if workflow.configfiles else "config/config.yaml"
    try:
        pretrained.check_pins(config["weights"]["sha256"])
    except ValueError as exc:
        raise WorkflowError(f"{where}: {exc}") from None
    sweep = config["sweep"]
    pairs = {(MAIN_DEG, m) for m in METHODS} | {(d, m) for d in sweep["degradations"] for m in sweep["methods"]}
    needed = {}
    for deg, method in sorted(pairs):
        names = run_weights(deg, method)
        if EXP.loc[method, "kind"] == "serial" and EXP.loc[method, "input"] == "sr":  # + its SR stage's (div2k)
            names += sr_weights(deg, EXP.loc[method, "sr_model"])
        for name in names:
            needed.setdefault(name, set()).add(method)
    return needed


WEIGHTS_NEEDED = _check_weights()


def weights_preflight(dag):
    """Before the first job of a real run (onstart; a dry run never calls it): every file the DAG will stage must be
    in weights.dir or downloadable, else stop with one message naming each missing file and where to put it."""
    names = sorted(job.wildcards.weights_file for job in dag.needrun_jobs() if job.rule.name == "stage_weights")
    w = config["weights"]
    missing = pretrained.unavailable(names, w["dir"], w["allow_download"])
    if missing:
        raise WorkflowError(pretrained.missing_message(missing, w["dir"], w["allow_download"], WEIGHTS_NEEDED))


def weights_targets():
    """Every staged file of the configured runs (target `weights`: stage them alone, e.g. on a login node)."""
    return [str(pretrained.manifest_path(WEIGHTS_DIR, f)) for f in sorted(WEIGHTS_NEEDED)]


def partition_classes(partition_json):
    """Category names of a partition json, in id order (the run's classes)."""
    cats = json.loads(Path(partition_json).read_text(encoding="utf-8")).get("categories") or []
    return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]


def spec_path(wc):
    return f"{R}/{wc.dataset}/{wc.degradation}/{wc.method}/seed{wc.seed}/run_spec.json"


def sr_spec_path(wc):
    return f"{R}/{wc.dataset}/{wc.degradation}/sr/{wc.sr_model}/seed{wc.seed}/run_spec.json"


def metrics_targets(methods, degradations):
    return [f"{R}/{ds}/{deg}/{m}/seed{s}/metrics.json"
            for ds in DATASETS for deg in degradations for m in methods for s in SEEDS]


def efficiency_targets():
    return [f"{R}/efficiency/{m}.json" for m in METHODS]


def sweep_targets():
    sw = config["sweep"]
    return metrics_targets([m for m in sw["methods"]], sw["degradations"])


def sr_reference_targets():
    """The interpolation outputs the SR table shows as reference rows (``report.sr_references``), first seed."""
    return [sr_spec(ds, MAIN_DEG, name, SEEDS[0])["paths"]["images"]
            for ds in DATASETS for name in config["report"]["sr_references"]]


def report_inputs():
    return (metrics_targets(METHODS, [MAIN_DEG]) + sweep_targets() + efficiency_targets() + sr_reference_targets())
# Regexes for wildcard constraints that keep the SDCoNet and serial rules disjoint.
SDC_RE = "|".join(i for i in EXP.index if EXP.loc[i, "kind"] in ("sdconet", "ablation"))
SERIAL_RE = "|".join(i for i in EXP.index if EXP.loc[i, "kind"] == "serial")


def image_set(wc):
    """The tiles a serial method's detector trains and is scored on (HR, LR or one SR stage's output): its run
    spec's ``paths.images``, so the DAG's inputs and what the job reads cannot disagree."""
    return method_spec(wc.dataset, wc.degradation, wc.method, wc.seed)["paths"]["images"]


def sdconet_lr_input(wc):
    """The offline LR tiles an SDCoNet run reads (its spec's ``paths.lr``), or nothing when the model makes its
    LR input itself or reads the HR tiles (an ``input: hr`` row: the tiles folder is already an input)."""
    paths = method_spec(wc.dataset, wc.degradation, wc.method, wc.seed)["paths"]
    lr = paths["lr"]
    return [lr] if lr and Path(lr).parent != Path(paths["tiles"]) else []
