"""Run configurations of the serial baselines (SR training/inference, YOLO, Faster R-CNN).

Each config is a frozen dataclass; ``from_dict`` (:func:`benchcore.config.from_dict`) rejects unknown keys with an
error naming the source, the key, the config class and the closest valid key, and values of the wrong type, so a
typo in a Snakemake/YAML config never falls back silently to a default.
``to_kwargs()`` gives the keyword arguments of the matching library function.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

from benchcore import config as _config

T = TypeVar("T", bound="_Config")


class ConfigError(_config.ConfigError):
    """An unknown key, a missing required key or a bad value in a baseline config."""


@dataclass(frozen=True)
class _Config:
    """Shared ``from_dict`` / ``to_dict`` / ``to_kwargs``."""

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any] | None, source: str = "config") -> T:
        """Build from a mapping; raise :class:`ConfigError` on an unknown key, a missing key or a bad value."""
        obj = _config.from_dict(cls, data, source=source, error=ConfigError)
        obj.validate(source)
        return obj

    def validate(self, source: str = "config") -> None:
        """Check value ranges (overridden where there is something to check)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (recorded in checkpoints and ``metrics.json`` provenance)."""
        return dataclasses.asdict(self)

    def to_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the library function this config drives."""
        return self.to_dict()


def _positive(source: str, cfg: _Config, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if v is not None and v <= 0:
            raise ConfigError(f"{source}: {type(cfg).__name__}.{n} must be > 0, got {v!r}")


def require_scale(cfg: _Config, source: str = "config") -> int:
    """The config's scale, which a file or section may leave unset but a run may not."""
    if cfg.scale is None:  # type: ignore[attr-defined]
        raise ConfigError(f"{source}: {type(cfg).__name__}.scale is not set: it is the run's degradation scale "
                          f"(set by the run spec, or --scale on the command line)")
    return int(cfg.scale)  # type: ignore[attr-defined]


def _check_init(source: str, cfg: _Config) -> None:
    """``init`` is a known keyword; ``scratch`` names no file and ``file`` needs one (imagenet / coco may leave
    ``weights`` to the run spec, which names the staged file)."""
    _choice(source, cfg, "init", ("scratch", "imagenet", "coco", "file"))
    if cfg.init == "scratch" and cfg.weights is not None:  # type: ignore[attr-defined]
        raise ConfigError(f"{source}: {type(cfg).__name__}.weights is set but init is 'scratch': set init: file to "
                          f"start from {cfg.weights!r}, or drop weights")  # type: ignore[attr-defined]
    if cfg.init == "file" and cfg.weights is None:  # type: ignore[attr-defined]
        raise ConfigError(f"{source}: {type(cfg).__name__}.init 'file' needs weights: <path>")


def _choice(source: str, cfg: _Config, name: str, choices: tuple[Any, ...]) -> None:
    v = getattr(cfg, name)
    if v not in choices:
        raise ConfigError(f"{source}: {type(cfg).__name__}.{name} must be one of {choices}, got {v!r}")


@dataclass(frozen=True)
class SRTrainConfig(_Config):
    """:func:`baselines.sr_train.train_sr` (paths are passed separately)."""

    model_name: str = "edsr"
    #: The run's degradation scale (no default: the run spec or the CLI's ``--scale`` sets it).
    scale: int | None = None
    preset: str = "paper"
    iters: int = 100_000
    batch_size: int = 16
    #: LR patch side; the HR patch is ``lr_patch_size * scale``. BasicSR's recipes keep the LR patch across scales
    #: (EDSR gt_size 96 / 144 / 192 at x2 / x3 / x4, i.e. LR 48), so one value serves every degradation.
    lr_patch_size: int = 48
    lr: float = 2e-4
    seed: int = 0
    checkpoint_every: int = 5000
    log_every: int = 100
    num_workers: int = 4
    cache_images: bool = False
    part: str = "train"
    device: str = "cpu"
    #: How the network starts (docs/weights.md): scratch (trained on the dataset's pairs only) | div2k (the published
    #: DIV2K weights of this model and scale, preset paper only, fine-tuned on the pairs) | file.
    init: str = "scratch"
    #: The file ``init`` reads (the run spec sets the staged one for div2k; required for file).
    weights: str | None = None

    def validate(self, source: str = "config") -> None:  # noqa: D102
        from baselines.sr_models import sr_model_names  # noqa: PLC0415  (the registry; imports torch)

        _choice(source, self, "model_name", sr_model_names())
        _choice(source, self, "preset", ("paper", "tiny"))
        _choice(source, self, "scale", (None, 1, 2, 3, 4, 8))  # None: not set yet (the run sets it)
        _positive(source, self, "iters", "batch_size", "lr_patch_size", "lr", "checkpoint_every", "log_every")
        _choice(source, self, "init", ("scratch", "div2k", "file"))
        if self.init == "scratch" and self.weights is not None:
            raise ConfigError(f"{source}: SRTrainConfig.weights is set but init is 'scratch': set init: file to start "
                              f"from {self.weights!r}, or drop weights")
        if self.init == "file" and self.weights is None:
            raise ConfigError(f"{source}: SRTrainConfig.init 'file' needs weights: <path>")
        if self.init == "div2k":
            self._check_div2k(source)

    def _check_div2k(self, source: str) -> None:
        """``div2k`` names a published file: the paper-size network, at a scale that has one."""
        from benchcore.weights import INIT_FILES  # noqa: PLC0415

        if self.preset != "paper":
            raise ConfigError(f"{source}: SRTrainConfig.init 'div2k' needs preset 'paper' (the published DIV2K weights "
                              f"are paper-size networks; preset {self.preset!r} has other shapes): use init scratch")
        if self.scale is None:  # the run sets it; checked again then
            return
        published = {int(net.rsplit("_x", 1)[1]): name for (net, init), name in sorted(INIT_FILES.items())
                     if init == "div2k" and net.rsplit("_x", 1)[0] == self.model_name}
        if self.scale not in published:
            have = ", ".join(f"x{s} ({published[s]})" for s in sorted(published)) or "none"
            raise ConfigError(f"{source}: SRTrainConfig.init 'div2k': no published DIV2K weights for {self.model_name} "
                              f"x{self.scale}; published for {self.model_name}: {have}. Use init scratch, or init "
                              f"file with weights: <path>")

    def to_kwargs(self) -> dict[str, Any]:
        """Arguments of ``train_sr`` (its ``patch_size`` is the HR side: ``lr_patch_size * scale``)."""
        d = self.to_dict()
        d["patch_size"] = d.pop("lr_patch_size") * require_scale(self, "sr config")
        return d


@dataclass(frozen=True)
class SRInferConfig(_Config):
    """:func:`baselines.sr_infer.infer_sr` / :func:`baselines.interp.upscale_folder` options."""

    method: str = "edsr"
    #: The run's degradation scale (no default: the run spec, the checkpoint or the CLI's ``--scale`` sets it).
    scale: int | None = None
    crop_border: int | None = None
    test_y_channel: bool = True
    tile: int | None = None
    tile_pad: int = 16

    def validate(self, source: str = "config") -> None:  # noqa: D102
        from baselines.sr_models import sr_model_names  # noqa: PLC0415

        _choice(source, self, "method", (*sr_model_names(), "bicubic", "nearest"))
        _positive(source, self, "scale", "tile")

    def to_kwargs(self) -> dict[str, Any]:
        """Arguments of ``infer_sr`` (learned methods) or ``upscale_folder`` (bicubic / nearest)."""
        common = {"scale": self.scale, "crop_border": self.crop_border, "test_y_channel": self.test_y_channel}
        if self.method in ("bicubic", "nearest"):
            return {**common, "method": self.method}
        return {**common, "tile": self.tile, "tile_pad": self.tile_pad}


@dataclass(frozen=True)
class YoloConfig(_Config):
    """:func:`baselines.yolo.train_yolo` + the prediction settings of :func:`baselines.yolo.predict_yolo`."""

    model: str = "yolov8n.yaml"
    epochs: int = 100
    #: Train / predict size; None: the native size of the images (HR / SR tiles: the HR tile; LR tiles: HR / scale).
    imgsz: int | None = None
    batch: int = 16
    seed: int = 0
    device: str = "cpu"
    #: How the detector starts (docs/weights.md): scratch | imagenet (the -cls backbone) | coco | file.
    init: str = "scratch"
    #: The file ``init`` reads (the run spec sets the staged one for imagenet / coco; required for file).
    weights: str | None = None
    workers: int = 0
    val: bool = True
    conf: float = 0.001
    iou: float = 0.6
    max_det: int = 300
    overrides: dict[str, Any] = field(default_factory=dict)

    def validate(self, source: str = "config") -> None:  # noqa: D102
        if not str(self.model).endswith((".yaml", ".yml")):
            raise ConfigError(f"{source}: YoloConfig.model must be a model yaml such as yolov8n.yaml (a .pt name "
                              f"would be downloaded); start from a local .pt with init and weights (docs/weights.md)")
        _positive(source, self, "epochs", "imgsz", "batch", "max_det")
        _check_init(source, self)

    def to_kwargs(self) -> dict[str, Any]:
        """Arguments of ``train_yolo`` (prediction keys and ``overrides`` are unpacked/removed)."""
        d = self.to_dict()
        for k in ("conf", "iou", "max_det"):
            d.pop(k)
        d.update(d.pop("overrides"))
        return d

    def predict_kwargs(self) -> dict[str, Any]:
        """Arguments of ``predict_yolo``."""
        return {"conf": self.conf, "iou": self.iou, "max_det": self.max_det, "imgsz": self.imgsz,
                "device": self.device}


@dataclass(frozen=True)
class FrcnnConfig(_Config):
    """:func:`baselines.frcnn.train_frcnn` (paths are passed separately)."""

    preset: str = "paper"
    epochs: int = 12
    batch_size: int = 2
    lr: float = 0.01
    seed: int = 0
    tile_size: int | None = None
    optimizer: str = "sgd"
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    log_every: int = 20
    num_workers: int = 0
    #: How the detector starts (docs/weights.md): scratch | imagenet (ResNet-50 trunk) | coco | file.
    init: str = "scratch"
    #: The file ``init`` reads (the run spec sets the staged one for imagenet / coco; required for file).
    weights: str | None = None
    amp: bool = True
    device: str = "cpu"

    def validate(self, source: str = "config") -> None:  # noqa: D102
        _choice(source, self, "preset", ("paper", "tiny"))
        _choice(source, self, "optimizer", ("sgd", "adamw"))
        _check_init(source, self)
        _positive(source, self, "epochs", "batch_size", "lr", "tile_size", "log_every")
