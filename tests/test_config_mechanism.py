"""The one config mechanism (benchcore.config): typed configs from dicts, the ``--set`` grammar and the workflow
config check, with one-line errors naming the file, the dotted key and the nearest valid key."""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from baselines.config import ConfigError as BaselinesConfigError
from baselines.config import SRTrainConfig, YoloConfig
from baselines.pipeline import parse_sets as baselines_parse_sets
from baselines.pipeline import read_config
from benchcore import config as bc
from benchcore.config import (ConfigError, flatten, from_dict, merge, nest, parse_sets, unknown_key_message,
                              validate_workflow_config)
from sdconet.models.build import load_model_config
from sdconet.models.config import ConfigError as ModelConfigError
from sdconet.models.config import SaliencyConfig, SwinConfig
from sdconet.models.config import from_dict as model_from_dict
from sdconet.train_config import TrainConfig, TrainConfigError

SCHEMA = "workflow/schemas/config.schema.yaml"


# --------------------------------------------------------------------------------------- generic from_dict
@dataclass(frozen=True)
class Inner:
    size: int = 4
    ratio: float = 0.5
    names: tuple[str, ...] = ("a",)


@dataclass
class Outer:
    steps: int
    inner: Inner = field(default_factory=Inner)
    pair: tuple[int, float] = (1, 2.0)
    extra: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    flag: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")


def _err(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_from_dict_builds_nested_and_coerces() -> None:
    cfg = from_dict(Outer, {"steps": 3, "inner": {"size": 8, "ratio": 1, "names": ["x", "y"]}, "pair": [5, 3],
                            "extra": {"k": [1]}, "label": None, "flag": True})
    assert cfg == Outer(3, Inner(8, 1.0, ("x", "y")), (5, 3.0), {"k": [1]}, None, True)
    assert isinstance(cfg.inner.ratio, float) and isinstance(cfg.pair[1], float)
    assert from_dict(Outer, {"steps": 1, "inner": None}).inner == Inner()       # an empty YAML section
    assert from_dict(Inner, {"ratio": "1e-3"}).ratio == 1e-3                      # PyYAML's string for 1e-3
    assert from_dict(Inner, {"ratio": "inf"}).ratio == math.inf
    assert from_dict(Outer, {"steps": 1, "label": 0}).label == "0"               # device: 0
    assert from_dict(Outer, cfg) == cfg                                          # an instance is accepted


def test_from_dict_unknown_key_names_source_path_and_suggestion() -> None:
    with pytest.raises(ConfigError) as exc:
        from_dict(Outer, {"steps": 1, "inner": {"sise": 3}}, source="run.yaml", prefix="job.")
    assert _err(exc) == ("run.yaml: unknown key 'job.inner.sise' for Inner; did you mean 'job.inner.size'? "
                         "(valid: names, ratio, size)")
    with pytest.raises(ConfigError) as exc:
        from_dict(Outer, {"steps": 1, "zzz": 3})
    assert _err(exc).startswith("unknown key 'zzz' for Outer (valid: ") and "did you mean" not in str(exc.value)


@pytest.mark.parametrize(("data", "pattern"), [
    ({}, r"^f\.yaml: missing required key 'steps' for Outer$"),
    ({"steps": "3"}, r"^f\.yaml: 'steps' must be an integer, got '3'$"),
    ({"steps": True}, r"'steps' must be an integer"),
    ({"steps": 1, "flag": 1}, r"'flag' must be true/false, got 1"),
    ({"steps": 1, "inner": {"ratio": "big"}}, r"'inner\.ratio' must be a number, got 'big'"),
    ({"steps": 1, "inner": {"names": "a"}}, r"'inner\.names' must be a list"),
    ({"steps": 1, "inner": {"names": ["a", 2.5]}}, r"'inner\.names\[1\]' must be a string"),
    ({"steps": 1, "pair": [1, 2, 3]}, r"'pair' must have 2 entries"),
    ({"steps": 1, "inner": 3}, r"'inner' must be a mapping of Inner keys, got 3"),
    ({"steps": 1, "extra": [1]}, r"'extra' must be a mapping"),
    ({"steps": 0}, r"^f\.yaml: steps must be >= 1, got 0$"),                   # __post_init__, source added
])
def test_from_dict_bad_values_name_the_key(data: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as exc:
        from_dict(Outer, data, source="f.yaml")
    _err(exc)


def test_from_dict_raises_the_callers_error_class() -> None:
    class MyError(ConfigError):
        pass

    with pytest.raises(MyError):
        from_dict(Inner, {"bad": 1}, error=MyError)


def test_package_errors_share_the_base_class() -> None:
    for cls in (ModelConfigError, TrainConfigError, BaselinesConfigError):
        assert issubclass(cls, ConfigError) and issubclass(cls, ValueError)


# ------------------------------------------------------------------------- the three typed configs use it
def test_model_config_did_you_mean_on_nested_key(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError) as exc:
        model_from_dict({"swin": {"embed_dims": 96}}, source="run.yaml", prefix="model.")
    msg = _err(exc)
    assert msg.startswith("run.yaml: unknown key 'model.swin.embed_dims' for SwinConfig; "
                          "did you mean 'model.swin.embed_dim'? (valid: depths, ") and "window_size)" in msg
    with pytest.raises(ModelConfigError, match=r"'saliency\.level_ranges' must be a list of \(low, high\) pairs"):
        model_from_dict({"saliency": {"level_ranges": 3}})
    assert model_from_dict({"window_size": 8}, cls=SwinConfig).window_size == 8
    path = tmp_path / "run.yaml"      # through the run-config reader: the file is named
    path.write_text("model:\n  preset: tiny\n  swin: {embed_dims: 96}\ntrain: {epochs: 1, batch_size: 2}\n")
    with pytest.raises(ModelConfigError) as exc:
        load_model_config(path)
    msg = _err(exc)
    assert str(path) in msg and "'swin.embed_dims'" in msg and "did you mean 'swin.embed_dim'" in msg


def test_model_config_level_ranges_read_inf() -> None:
    ranges = [[-1, 64], [64, 128], [128, 256]]
    for hi in ("inf", "Infinity", None, math.inf):
        got = model_from_dict({"level_ranges": [*ranges, [256, hi]]}, cls=SaliencyConfig)
        assert got.level_ranges == ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, math.inf))


def test_train_config_did_you_mean() -> None:
    with pytest.raises(TrainConfigError) as exc:
        TrainConfig.from_dict({"epochs": 1, "batch_size": 2, "warmup_iter": 1}, source="run.yaml", prefix="train.")
    assert _err(exc).startswith("run.yaml: unknown key 'train.warmup_iter' for TrainConfig; "
                                "did you mean 'train.warmup_iters'? (valid: accumulate, ")
    with pytest.raises(TrainConfigError, match=r"^r\.yaml: missing required keys 'train\.epochs', 'train\.batch_size'"):
        TrainConfig.from_dict({}, source="r.yaml", prefix="train.")
    with pytest.raises(TrainConfigError, match=r"'milestones\[0\]' must be an integer"):
        TrainConfig.from_dict({"epochs": 1, "batch_size": 2, "milestones": ["x"]})
    cfg = TrainConfig.from_dict({"epochs": 2, "batch_size": 2, "lr": "2e-4", "milestones": [1], "clip_grad": None})
    assert cfg.lr == 2e-4 and cfg.milestones == (1,) and cfg.clip_grad is None
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_baselines_config_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(BaselinesConfigError) as exc:
        SRTrainConfig.from_dict({"iter": 5}, source="cfg.yaml")
    assert _err(exc).startswith("cfg.yaml: unknown key 'iter' for SRTrainConfig; did you mean 'iters'? (valid: ")
    cfg = tmp_path / "base.yaml"
    cfg.write_text("yolo:\n  epoch: 3\n")
    with pytest.raises(BaselinesConfigError) as exc:
        read_config(cfg)
    assert _err(exc).startswith(f"{cfg} [yolo]: unknown key 'epoch' for YoloConfig; did you mean 'epochs'?")
    cfg.write_text("yoloo:\n  epochs: 3\n")
    with pytest.raises(BaselinesConfigError) as exc:
        read_config(cfg)
    assert _err(exc).startswith(f"{cfg}: unknown section 'yoloo'; did you mean 'yolo'? (valid: ")
    with pytest.raises(BaselinesConfigError, match=r"'epochs' must be an integer, got 'many'"):
        YoloConfig.from_dict({"epochs": "many"})


# ---------------------------------------------------------------------------------------- the --set grammar
def test_parse_sets_grammar() -> None:
    got = parse_sets(["train.epochs=3", "model.swin.window_size = 8", "train.lr=1e-3", "a.b=[1, 2.5]",
                      "flag=true", "name=cuda:0", "x={k: v}", "empty=", "s='007'", "train.epochs=4"])
    assert got == {"train.epochs": 4, "model.swin.window_size": 8, "train.lr": 1e-3, "a.b": [1, 2.5], "flag": True,
                   "name": "cuda:0", "x": {"k": "v"}, "empty": None, "s": "007"}
    assert isinstance(got["train.lr"], float) and parse_sets(None) == {}
    for bad, pattern in (("train.epochs", r"--set 'train\.epochs': expected key=value"),
                         ("=3", "dotted name"), ("a..b=1", "dotted name"), ("a=[1,", "not valid YAML")):
        with pytest.raises(ConfigError, match=pattern) as exc:
            parse_sets([bad])
        _err(exc)


def test_nest_flatten_merge() -> None:
    flat = {"model.swin.window_size": 8, "model.num_classes": 3, "train.epochs": 2, "top": 1, "empty": {}}
    nested = nest(flat)
    assert nested == {"model": {"swin": {"window_size": 8}, "num_classes": 3}, "train": {"epochs": 2}, "top": 1,
                      "empty": {}}
    assert flatten(nested) == flat
    assert nest({"model": {"a": 1}, "model.b": 2}) == {"model": {"a": 1, "b": 2}}
    with pytest.raises(ConfigError, match="'model' is a value, not a section"):
        nest({"model": 1, "model.b": 2})
    assert merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 5}, "d": {"x": 1}}) == {"a": {"b": 5, "c": 2},
                                                                                        "d": {"x": 1}}


def test_baselines_sets_use_the_one_grammar(tmp_path: Path) -> None:
    sets = baselines_parse_sets(["yolo.epochs=3", "sr_edsr.iters=10", "batch=4", "yolo.overrides.lr0=1e-3"], "yolo")
    assert sets == {"yolo": {"epochs": 3, "batch": 4, "overrides": {"lr0": 1e-3}}, "sr_edsr": {"iters": 10}}
    with pytest.raises(BaselinesConfigError, match="expected key=value"):
        baselines_parse_sets(["yolo.epochs"], "yolo")
    cfg = tmp_path / "b.yaml"
    cfg.write_text("yolo:\n  epochs: 1\n  overrides: {mosaic: 0.0}\n")
    merged = read_config(cfg, baselines_parse_sets(["yolo.overrides.lr0=0.02", "epochs=2"], "yolo"))
    assert merged["yolo"] == {"epochs": 2, "overrides": {"mosaic": 0.0, "lr0": 0.02}}
    with pytest.raises(BaselinesConfigError) as exc:
        read_config(cfg, baselines_parse_sets(["yolo.epoks=2"], "yolo"))
    assert _err(exc).startswith(f"{cfg} + --set [yolo]: unknown key 'epoks' for YoloConfig; did you mean 'epochs'?")
    with pytest.raises(BaselinesConfigError, match=r"^--set: unknown section 'yoloo'; did you mean 'yolo'\?"):
        read_config(cfg, baselines_parse_sets(["yoloo.epochs=2"], "yolo"))


def test_sdconet_cli_uses_the_one_grammar() -> None:
    from sdconet import cli  # noqa: PLC0415

    assert cli.parse_sets is bc.parse_sets


# ----------------------------------------------------------------------------------- the workflow config
@pytest.fixture(scope="module")
def demo_config(repo_root: Path) -> dict[str, Any]:
    return yaml.safe_load((repo_root / "config" / "demo_full.yaml").read_text())


def _check(repo_root: Path, cfg: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        validate_workflow_config(cfg, repo_root / SCHEMA, "config/x.yaml")
    return _err(exc)


def test_workflow_configs_shipped_pass(repo_root: Path) -> None:
    for path in sorted((repo_root / "config").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "datasets" in doc:
            validate_workflow_config(doc, repo_root / SCHEMA, str(path))


def test_workflow_config_unknown_keys(repo_root: Path, demo_config: dict[str, Any]) -> None:
    top = {**demo_config, "result_dir": "x"}
    del top["results_dir"]
    msg = _check(repo_root, top)
    assert msg.startswith("config/x.yaml: unknown key 'result_dir'") and "did you mean 'results_dir'?" in msg
    deg = yaml.safe_load(yaml.safe_dump(demo_config))
    deg["degradations"]["bicubic_x2"]["scael"] = deg["degradations"]["bicubic_x2"].pop("scale")
    assert _check(repo_root, deg).startswith(
        "config/x.yaml: unknown key 'degradations.bicubic_x2.scael' ('scael' was unexpected); "
        "did you mean 'degradations.bicubic_x2.scale'? (valid: blur, jpeg, kernel, noise, scale, seed)")
    tile = yaml.safe_load(yaml.safe_dump(demo_config))
    tile["datasets"]["demo"]["tile"]["sise"] = 3
    msg = _check(repo_root, tile)
    assert msg.startswith("config/x.yaml: unknown key 'datasets.demo.tile.sise'")
    assert "did you mean 'datasets.demo.tile.size'?" in msg
    ratios = yaml.safe_load(yaml.safe_dump(demo_config))
    ratios["datasets"]["demo"]["partition"]["ratios"]["tset"] = 0.2
    assert "did you mean 'datasets.demo.partition.ratios.test'?" in _check(repo_root, ratios)


def test_workflow_config_bad_values(repo_root: Path, demo_config: dict[str, Any]) -> None:
    cfg = yaml.safe_load(yaml.safe_dump(demo_config))
    cfg["degradations"]["bicubic_x2"]["scale"] = 5
    assert _check(repo_root, cfg) == ("config/x.yaml: bad value at 'degradations.bicubic_x2.scale': 5 "
                                      "(expected one of 2, 3, 4)")
    cfg = yaml.safe_load(yaml.safe_dump(demo_config))
    cfg["seeds"] = [0, "one"]
    assert _check(repo_root, cfg) == "config/x.yaml: bad value at 'seeds[1]': \"one\" (expected an integer)"
    cfg = yaml.safe_load(yaml.safe_dump(demo_config))
    cfg["datasets"]["demo"]["tile"]["keep_ratio"] = 0
    assert "'datasets.demo.tile.keep_ratio': 0 (expected > 0)" in _check(repo_root, cfg)
    cfg = yaml.safe_load(yaml.safe_dump(demo_config))
    del cfg["datasets"]["demo"]["source"]
    assert _check(repo_root, cfg).startswith("config/x.yaml: missing required key 'datasets.demo.source'")
    cfg = yaml.safe_load(yaml.safe_dump(demo_config))
    cfg["datasets"]["Demo2"] = {"source": "demo"}
    assert "bad key name \"Demo2\" in 'datasets'" in _check(repo_root, cfg)


def test_unknown_key_message_format() -> None:
    assert unknown_key_message("f.yaml", "a.b.colour", ["color", "size"], owner="Paint") == (
        "f.yaml: unknown key 'a.b.colour' for Paint; did you mean 'a.b.color'? (valid: color, size)")
    assert unknown_key_message(None, "zz", ["a"]) == "unknown key 'zz' (valid: a)"


@pytest.mark.workflow
def test_snakemake_prints_a_config_typo_in_one_line(repo_root: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    shutil.copy(repo_root / "config" / "config.yaml", cfg)
    text = cfg.read_text()
    assert "tile: {size: 256" in text
    cfg.write_text(text.replace("tile: {size: 256", "tile: {sise: 256", 1))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "-n", "--cores", "1",
                        "--configfile", str(cfg), "--config", f"results_dir={tmp_path}/results"],
                       cwd=repo_root, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    line = next((ln for ln in out.splitlines() if "unknown key" in ln), "")
    assert line.startswith(f"{cfg}: unknown key 'datasets.demo.tile.sise'"), out
    assert "did you mean 'datasets.demo.tile.size'?" in line, out
    assert len(out.splitlines()) < 20 and "additionalProperties" not in out and "description" not in out, out
