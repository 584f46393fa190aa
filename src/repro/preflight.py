"""Check a whole request before the first job trains: every job of a sweep, composed and validated.

Hydra composes each job only when it starts, so a typo in the fifth job of a sweep would surface
after four jobs had trained. Here the command line is expanded the way Hydra's basic sweeper does
it, every job's config is composed, and the cheap checks run once per distinct value. Any problem
becomes one `UserError` line (exit code 2).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from repro.errors import UserError

#: Launchers that run jobs on other machines; hardware is validated there, not here.
_REMOTE_LAUNCHER_MARKERS = ("submitit", "slurm")


def preflight(argv: list[str], conf_dir: Path) -> None:
    """Compose and validate every job that `argv` asks for; raise `UserError` on the first problem."""
    args, _unknown = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.info or args.cfg or args.shell_completion:
        return  # Hydra only prints something; nothing will train
    if args.config_dir or args.config_path or args.config_name:
        return  # a config of the user's own; Hydra validates it when each job starts

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        _check_added_keys(list(args.overrides), conf_dir)
        jobs = _expand_jobs(list(args.overrides), args.multirun)
        checked: set[str] = set()
        for overrides in jobs:
            cfg = _compose(overrides)
            remote = any(
                marker in str(cfg.hydra.launcher.get("_target_", "")) for marker in _REMOTE_LAUNCHER_MARKERS
            )
            job_cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
            validate_job(job_cfg, check_hardware=not remote, already_checked=checked)


def _expand_jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job, as Hydra's basic sweeper would launch them."""
    parser = OverridesParser.create()
    parsed = _parse(parser, overrides)
    if not multirun:
        if any(override.is_sweep_override() for override in parsed):
            sweeps = [override.input_line for override in parsed if override.is_sweep_override()]
            raise UserError(f"{' '.join(sweeps)} is a sweep; add -m (--multirun) to run one job per value")
        return [overrides]
    fixed = [override.input_line for override in parsed if not override.is_sweep_override()]
    sweep_params = _compose(fixed).hydra.sweeper.get("params") or {}
    combined = parser.parse_overrides([f"{key}={value}" for key, value in sweep_params.items()] + overrides)
    return [job for batch in BasicSweeper.split_arguments(combined, None) for job in batch]


def compose_jobs(
    overrides: list[str], multirun: bool, conf_dir: Path
) -> list[tuple[dict[str, str], DictConfig]]:
    """Every job that `overrides` asks for, expanded as Hydra's basic sweeper would, and composed.

    Returns:
        (the job's config-group choices, its config without the `hydra` node) per job. Raises
        `UserError` on a bad override or config.
    """
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        jobs = []
        for job_overrides in _expand_jobs(overrides, multirun):
            cfg = _compose(job_overrides)
            choices = {str(key): str(value) for key, value in cfg.hydra.runtime.choices.items()}
            jobs.append((choices, OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])))
        return jobs


def _parse(parser: OverridesParser, overrides: list[str]) -> list[Any]:
    """Parse the overrides; a word without `=` is most often the rest of an unquoted path with spaces."""
    try:
        return parser.parse_overrides(overrides)
    except OverrideParseException as error:
        for before, word in zip(["", *overrides], overrides, strict=False):
            if "=" not in word and not word.startswith(("~", "-")):
                joined = f"{before} {word}" if "=" in before else word
                raise UserError(
                    f"cannot parse the override {word!r}: it is not KEY=VALUE; if it is the rest of a value "
                    f"with spaces, quote the whole override, e.g. '{joined}'"
                ) from None
        raise UserError(f"cannot parse the overrides: {_one_line(error)}") from None


def _schema_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a composed config, leaves and groups."""
    keys: list[str] = []
    if isinstance(cfg, Mapping) or OmegaConf.is_dict(cfg):
        for key in cfg:
            full = f"{prefix}{key}"
            keys.append(full)
            keys.extend(_schema_keys(cfg[key] if OmegaConf.is_dict(cfg) else cfg.get(key), f"{full}."))
    return keys


def _close_keys(key: str) -> str:
    """'; did you mean a, b?' for the schema keys closest to `key`, or ''."""
    base = compose(config_name="config", overrides=[])
    known = [name for name in _schema_keys(base) if not name.startswith("hydra")]
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _check_added_keys(overrides: list[str], conf_dir: Path) -> None:
    """Refuse `+key=value` for a key the schema lacks: it would be logged as a param and do nothing."""
    parsed = _parse(OverridesParser.create(), overrides)
    added = [o for o in parsed if (o.is_add() or o.is_force_add()) and not o.key_or_group.startswith("hydra")]
    if not added:
        return
    base = compose(config_name="config", overrides=[])
    for override in added:
        key = override.key_or_group
        if (conf_dir / key).is_dir():
            continue  # a config group (`+experiment=paper`)
        if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
            raise UserError(
                f"{override.input_line} adds {key}, which no config schema has, so it would do nothing"
                f"{_close_keys(key)}"
            )


_ABSENT = object()


def _compose(overrides: list[str]) -> DictConfig:
    try:
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as error:
        raise UserError(_unknown_option_message(error)) from None
    except (ConfigCompositionException, OmegaConfBaseException, OverrideParseException) as error:
        unknown = re.search(r"Could not override '([^']+)'", str(error))
        if unknown:  # Hydra's own hint (`+key=...`) would add a key that nothing reads
            raise UserError(f"unknown config key {unknown.group(1)}{_close_keys(unknown.group(1))}") from None
        raise UserError(f"invalid configuration: {_one_line(error)}") from None


def _unknown_option_message(error: MissingConfigException) -> str:
    missing = error.missing_cfg_file or ""
    group, _, option = missing.rpartition("/")
    options = [name for name in (error.options or []) if not name.endswith("_schema")]
    if group and options:
        return f"unknown option {group}={option}; known {group} options: {', '.join(sorted(options))}"
    return f"invalid configuration: {_one_line(error)}"


def _one_line(error: BaseException) -> str:
    """An exception and its causes as one line, without Hydra's and OmegaConf's indentation."""
    parts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        text = " ".join(line.strip() for line in str(current).splitlines() if line.strip())
        if text and text not in parts:
            parts.append(text)
        current = current.__cause__
    return "; ".join(parts) or type(error).__name__


def validate_job(
    cfg: DictConfig, check_hardware: bool, check_model: bool = True, already_checked: set[str] | None = None
) -> None:
    """The cheap checks of one job's config, in the order a user would fix them.

    Args:
        cfg: the job's composed config, without the `hydra` node.
        check_hardware: whether the GPU profile must match this machine (False when jobs run elsewhere).
        check_model: whether to build the architecture (on the meta device) to check its name and input size.
        already_checked: keys of checks done for earlier jobs of the same sweep, to skip repeats.
    """
    seen = already_checked if already_checked is not None else set()

    def once(key: str) -> bool:
        if key in seen:
            return False
        seen.add(key)
        return True

    _check_finite(cfg)
    _check_training_numbers(cfg)
    if cfg.tracking.heartbeat_s <= 0:
        raise UserError(f"tracking.heartbeat_s={cfg.tracking.heartbeat_s} must be greater than 0")
    model = cfg.model
    if once(f"head:{model.name}:{model.head}:{model.study_head_hidden}:{model.preprocessing}"):
        _check_head_and_preprocessing(cfg)
    if once(f"dataset:{OmegaConf.to_yaml(cfg.dataset)}"):
        from repro.data import validate_dataset

        validate_dataset(cfg.dataset)
    if check_model and once(f"model:{OmegaConf.to_yaml(cfg.model)}:{cfg.dataset.image_size}"):
        _check_model(cfg)
    if check_hardware:
        from repro.threads import resolve_threads

        resolve_threads(cfg.training.threads)  # the cores of the node that trains
    if check_hardware and once(f"gpu:{cfg.gpu.name}"):
        from repro.environments import resolve_device

        resolve_device(cfg.gpu)
    if once(f"energy:{OmegaConf.to_yaml(cfg.energy)}"):
        import torch

        from repro.energy import create_monitor
        from repro.energy.projection import check_projection

        create_monitor(cfg.energy, torch.device("cpu"), Path("."))  # validates only; starts nothing
        check_projection(cfg.energy)
    if once(f"tracking:{cfg.tracking.uri}"):
        from repro.tracking import check_tracking_uri

        check_tracking_uri(cfg.tracking.uri)


def _check_finite(cfg: DictConfig) -> None:
    """NaN and infinity pass every `<= 0` check, so refuse them wherever they appear."""

    def _walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                _walk(value, f"{prefix}{key}.")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                _walk(value, f"{prefix.rstrip('.')}[{index}].")
        elif isinstance(node, float) and not math.isfinite(node):
            raise UserError(f"{prefix.rstrip('.')}={node} is not a finite number")

    _walk(OmegaConf.to_container(cfg, resolve=True), "")


def _check_training_numbers(cfg: DictConfig) -> None:
    training = cfg.training
    positive = {
        "training.batch_size": training.batch_size,
        "training.head_lr": training.head_lr,
        "training.finetune_lr": training.finetune_lr,
        "training.early_stopping_patience": training.early_stopping_patience,
        "training.plateau_patience": training.plateau_patience,
        "training.plateau_factor": training.plateau_factor,
    }
    for key, value in positive.items():
        if value <= 0:
            raise UserError(f"{key}={value} must be greater than 0")
    for key in ("head_epochs", "finetune_epochs"):
        if training[key] < 0:
            raise UserError(f"training.{key}={training[key]} must be 0 or more")
    if training.head_epochs + training.finetune_epochs == 0:
        raise UserError(
            "training.head_epochs and training.finetune_epochs are both 0; train at least one epoch"
        )
    if training.max_steps_per_epoch is not None and training.max_steps_per_epoch <= 0:
        raise UserError(
            f"training.max_steps_per_epoch={training.max_steps_per_epoch} must be positive or null"
        )
    if not 0 <= training.momentum < 1:
        raise UserError(f"training.momentum={training.momentum} must be in [0, 1)")
    if training.early_stopping_min_delta < 0:
        raise UserError(
            f"training.early_stopping_min_delta={training.early_stopping_min_delta} must be 0 or more"
        )
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise UserError(f"seed={cfg.seed} must be a non-negative integer")
    if training.threads is not None and training.threads <= 0:
        raise UserError(f"training.threads={training.threads} must be 1 or more, or unset (all cores)")


def _check_head_and_preprocessing(cfg: DictConfig) -> None:
    """`model.head` and `model.preprocessing` are known, and a study head exists for the model."""
    from repro.config import ModelConfig
    from repro.data import check_preprocessing
    from repro.models import check_head

    check_head(ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True)))
    check_preprocessing(cfg.model.preprocessing)


def _check_model(cfg: DictConfig) -> None:
    """The model name exists, its weights file exists, and the image size suits it."""
    import torch

    from repro.config import ModelConfig
    from repro.models import check_input_size, create_model

    model_cfg = ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))
    if model_cfg.weights_file is not None and not Path(model_cfg.weights_file).is_file():
        raise UserError(
            f"model.weights_file={model_cfg.weights_file} does not exist; give the path of a checkpoint"
        )
    if model_cfg.weights_file is not None:
        from repro.models import check_checkpoint

        check_checkpoint(model_cfg.name, model_cfg.weights_file, {"drop_rate": model_cfg.drop_rate})
    # The architecture alone, on the meta device: shapes are checked, but no weight is allocated, initialised
    # or loaded, so the job's own build is the only real one.
    architecture = dataclasses.replace(model_cfg, pretrained=False, weights_file=None)
    with torch.device("meta"):
        model = create_model(architecture, num_classes=1)
        check_input_size(model, cfg.dataset.image_size, model_cfg.name)
