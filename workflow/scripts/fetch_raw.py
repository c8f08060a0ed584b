"""Rule fetch_raw: the demo generator, or fetch + verify a real dataset."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

cfg = snakemake.params.cfg  # noqa: F821
out = Path(snakemake.output[0])  # noqa: F821
if cfg["source"] == "demo":
    from data_prep.demo import generate_demo

    generate_demo(out, **cfg["demo"])  # the schema fills every default (tests/test_demo.py ties them together)
else:
    from data_prep.fetch import fetch_dataset

    f = cfg.get("fetch", {})
    fetch_dataset(cfg["source"], out, archives=[Path(a) for a in f.get("archives", [])],
                  allow_download=f.get("allow_download", False), manifest=f.get("manifest"),
                  md5=f.get("md5"), hrrsd_annotations=f.get("hrrsd_annotations"))
