# sdconet-bench: the one entry point.
#   snakemake --cores 2 all                                   # the embedded demo (default config)
#   snakemake --cores 8 --use-conda all --configfile config/paper.yaml
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


# The demo config is the default. A user config given with --configfile replaces it rather than being
# deep-merged into it (Snakemake merges nested dicts, which would silently add the demo dataset).
if not config.get("datasets"):

    configfile: "config/config.yaml"



# A typo fails in one line naming the file, the dotted key and the nearest valid key; snakemake's validate then
# fills the schema's defaults.
sys.path.insert(0, workflow.basedir)
from benchcore.config import validate_workflow_config

validate_workflow_config(
    config,
    Path(workflow.basedir) / "workflow/schemas/config.schema.yaml",
    workflow.configfiles[-1] if workflow.configfiles else "config/config.yaml",
)
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/runspec.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/degrade.smk"
include: "workflow/rules/sdconet.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/efficiency.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/slurm_errors.smk"  # a job SLURM killed at its time / memory limit, named


rule all:
    default_target: True
    input:
        data_targets(),
        f"{R}/report",


rule data:
    input:
        data_targets(),


rule sdconet:
    input:
        metrics_targets([m for m in SDCONET_METHODS if EXP.loc[m, "kind"] == "sdconet"], [MAIN_DEG]),


rule baselines:
    input:
        metrics_targets(SERIAL_METHODS, [MAIN_DEG]),


rule ablations:
    input:
        metrics_targets([m for m in SDCONET_METHODS if EXP.loc[m, "kind"] == "ablation"], [MAIN_DEG]),


rule efficiency:
    input:
        efficiency_targets(),


rule sweep:
    input:
        sweep_targets(),


rule tables:
    input:
        f"{R}/report",


rule report:
    input:
        f"{R}/report",
