# Failure messages for cluster runs (docs/cluster.md). When a run fails, print one line for each job that SLURM
# killed at its time or memory limit (or cancelled): the rule, the job ids and the resource to raise, read from the
# job's SLURM log by benchcore.slurm_failures. The SLURM plugin itself only says "SLURM status is: 'TIMEOUT'".
# Local runs submit nothing to SLURM, so this prints nothing for them.
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(str(workflow.current_basedir)).resolve().parents[1]))  # the repository
from benchcore.slurm_failures import explain_failures as _explain_slurm_failures  # noqa: E402


onerror:
    for _line in _explain_slurm_failures(log):
        print(_line, file=_sys.stderr)
