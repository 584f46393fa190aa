"""Check a whole request before the first job trains: every job of a sweep, composed and validated.

Hydra composes each job only when it starts, so a typo in the fifth job of a sweep would surface
after four jobs had trained. Here the command line is expanded the way Hydra's basic sweeper does
it, every job's config is composed, and the cheap checks run once per distinct value. Any problem
becomes one `UserError` line (exit code 2).
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from repro.config import Config, job_config
from repro.errors import UserError
from repro.hydra_adapter import command_line
from repro.paths import check_output_folder

#: Launchers that run jobs on other machines; hardware is validated there, not here.
_REMOTE_LAUNCHER_MARKERS = ("submitit", "slurm")


def preflight(argv: list[str], conf_dir: Path) -> None:
    """Compose and validate every job that `argv` asks for; raise `UserError` on the first problem."""
    args = command_line(argv)
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
            _check_hydra_dir(cfg, args.multirun)
            here = not runs_elsewhere(cfg.hydra.launcher)
            validate_job(_job(cfg), check_hardware=here, already_checked=checked)


def _check_hydra_dir(cfg: DictConfig, multirun: bool) -> None:
    """The folder Hydra will create for the run (or the sweep) can be created and written."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        folder = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except OmegaConfBaseException:
        return  # an interpolation only Hydra's runtime resolves; Hydra reports it if it fails
    if folder:
        check_output_folder(Path(str(folder)), key)


def runs_elsewhere(launcher: DictConfig) -> bool:
    """Whether Hydra's launcher runs each job in a process of its own (submitit, SLURM), not this one."""
    return any(marker in str(launcher.get("_target_", "")) for marker in _REMOTE_LAUNCHER_MARKERS)


def _sweep_jobs(overrides: list[Override]) -> list[list[str]]:
    """As Hydra's basic sweeper: one job per combination of the sweeps' values, later keys varying fastest."""
    values: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise UserError(
                f"{override.input_line}: the basic sweeper takes lists and ranges (a,b or range(0,3)), "
                "not intervals"
            )
    return [list(job) for job in itertools.product(*values.values())]


def _job(composed: DictConfig) -> Config:
    """A composed job config (with its `hydra` node) as the schema dataclasses, with their checks run."""
    try:
        return job_config(composed)
    except MissingMandatoryValue as error:  # a ??? the schema requires (dataset=imagefolder's path)
        key = error.full_key
        raise UserError(f"{key} is not set: give {key}=... on the command line") from None
    except OmegaConfBaseException as error:  # a ??? left unset, or an interpolation that does not resolve
        raise UserError(f"invalid configuration: {_one_line(error)}") from None


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
    return _sweep_jobs(combined)


def compose_jobs(overrides: list[str], multirun: bool, conf_dir: Path) -> list[tuple[dict[str, str], Config]]:
    """Every job that `overrides` asks for, expanded as Hydra's basic sweeper would, and composed.

    Returns:
        (the job's config-group choices, its config as the schema dataclasses) per job. Raises
        `UserError` on a bad override or config.
    """
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        compose_job = _JobComposer(conf_dir)
        return [compose_job(job_overrides) for job_overrides in _expand_jobs(overrides, multirun)]


class _JobComposer:
    """Composes jobs, once per distinct set of config files rather than once per job.

    Which files Hydra reads depends only on the config-group choices (`model=resnet50`); a plain
    value (`seed=3`, `training.lr=0.01`) cannot change it. A job whose overrides differ from an
    earlier job's only in such values is that job's config with the values replaced
    (`dataclasses.replace`, so each schema's `__post_init__` checks them). That is what Hydra's
    composition would give, provided the value has the type the schema holds and no interpolation
    (`${...}`) in the config could read it; otherwise, and on any refusal, the job is composed in
    full, so that errors read exactly as Hydra's.
    """

    def __init__(self, conf_dir: Path) -> None:
        self._parser = OverridesParser.create()
        self._bases: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[dict[str, str], Config] | None] = {}
        # The config groups: folders of conf/ and groups of the ConfigStore, then every choice seen.
        repo = ConfigStore.instance().repo
        self._groups = {p.name for p in conf_dir.iterdir() if p.is_dir()} | {
            name for name, node in repo.items() if isinstance(node, dict)
        }

    def __call__(self, overrides: list[str]) -> tuple[dict[str, str], Config]:
        parsed = self._parser.parse_overrides(overrides)  # parsed once already by _expand_jobs
        plain = [_is_plain_value(o) and o.key_or_group not in self._groups for o in parsed]
        values = [o for o, is_plain in zip(parsed, plain, strict=True) if is_plain]
        key = (
            tuple(o.input_line or "" for o, is_plain in zip(parsed, plain, strict=True) if not is_plain),
            tuple(o.key_or_group for o in values),
        )
        base = self._bases.get(key)
        if base is not None:
            patched = _replaced(base[1], values)
            if patched is not None:
                return dict(base[0]), patched
        cfg = _compose(overrides)
        choices = {str(k): str(v) for k, v in cfg.hydra.runtime.choices.items()}
        self._groups |= set(choices)
        job = _job(cfg)
        if key not in self._bases:
            self._bases[key] = (choices, job) if _values_replaceable(cfg, values) else None
        return choices, job


def _is_plain_value(override: Override) -> bool:
    """`key=value` for a scalar value, not a config group with `/`, an addition, a deletion or Hydra's key."""
    key = override.key_or_group
    return (
        not (override.is_add() or override.is_force_add() or override.is_delete())
        and override.package is None
        and "/" not in key
        and not key.startswith("hydra")
        and isinstance(override.value(), (str, int, float, bool))
    )


def _values_replaceable(cfg: DictConfig, values: list[Override]) -> bool:
    """Whether the plain values of `values` can be replaced in the converted config (see `_JobComposer`)."""
    choices = cfg.hydra.runtime.choices
    for override in values:
        key = override.key_or_group
        if key in choices:
            return False
        node = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.is_config(node):
            return False
    return not _has_interpolation(cfg, skip="hydra")


def _has_interpolation(node: Any, skip: str | None = None) -> bool:
    if OmegaConf.is_dict(node):
        keys = [k for k in node if k != skip]
    elif OmegaConf.is_list(node):
        keys = list(range(len(node)))
    else:
        return False
    for key in keys:
        if OmegaConf.is_interpolation(node, key):
            return True
        child = node._get_node(key)
        if OmegaConf.is_config(child) and _has_interpolation(child):
            return True
    return False


def _replaced(job: Config, values: list[Override]) -> Config | None:
    """`job` with each plain value replaced, or None where a value's type differs from the schema's."""
    for override in values:
        path = override.key_or_group.split(".")
        nodes = [job]
        for name in path[:-1]:
            nodes.append(getattr(nodes[-1], name, None))
            if not dataclasses.is_dataclass(nodes[-1]):
                return None
        if not hasattr(nodes[-1], path[-1]):
            return None
        old, value = getattr(nodes[-1], path[-1]), override.value()
        if isinstance(old, float) and type(value) is int:
            value = float(value)  # OmegaConf's conversion for a float field
        if type(value) is not type(old):
            return None
        try:
            for node, name in zip(reversed(nodes), reversed(path), strict=True):
                value = dataclasses.replace(node, **{name: value})
        except UserError:
            return None  # composed in full, for Hydra's own wording
        job = value
    return job


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


def _close_keys(key: str, overrides: list[str]) -> str:
    """'; did you mean a, b?' for the schema keys closest to `key`, or ''.

    The keys are those of the options the overrides choose (`dataset=csv_manifest` has its own keys).
    """
    base = OmegaConf.to_container(compose(config_name="config", overrides=_choices(overrides)))  # ??? kept
    known = [name for name in _schema_keys(base) if not name.startswith("hydra")]
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _choices(overrides: list[str]) -> list[str]:
    """The overrides that choose one option of a group (`dataset=csv_manifest`), not sweeps or keys."""
    return [o for o in overrides if re.fullmatch(r"[\w/]+=\w+", o) and not o.startswith("hydra")]


def _check_added_keys(overrides: list[str], conf_dir: Path) -> None:
    """Refuse `+key=value` for a key the schema lacks: it would be logged as a param and do nothing."""
    parsed = _parse(OverridesParser.create(), overrides)
    added = [o for o in parsed if (o.is_add() or o.is_force_add()) and not o.key_or_group.startswith("hydra")]
    if not added:
        return
    base = compose(config_name="config", overrides=_choices(overrides))
    for override in added:
        key = override.key_or_group
        if (conf_dir / key).is_dir():
            continue  # a config group (`+experiment=paper`)
        if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
            raise UserError(
                f"{override.input_line} adds {key}, which no config schema has, so it would do nothing"
                f"{_close_keys(key, overrides)}"
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
            key = unknown.group(1)
            raise UserError(f"unknown config key {key}{_close_keys(key, overrides)}") from None
        raise UserError(f"invalid configuration: {_one_line(error)}") from None


def _unknown_option_message(error: MissingConfigException) -> str:
    missing = error.missing_cfg_file or ""
    group, _, option = missing.rpartition("/")
    options = list(error.options or [])
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
    cfg: Config, check_hardware: bool, check_model: bool = True, already_checked: set[str] | None = None
) -> None:
    """The checks of one job that its schemas cannot make alone: files, hardware, the tracking store.

    Each schema has checked its own values when the job was converted (`repro.config.job_config`).

    Args:
        cfg: the job's config.
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

    if once(f"energy:{cfg.energy.meters}:{cfg.energy.country_iso_code}"):
        from repro.energy import check_energy_config  # needs the plugins, which repro.config never imports

        check_energy_config(cfg.energy)
    if once(f"dataset:{cfg.dataset!r}"):
        from repro.data import validate_dataset

        validate_dataset(cfg.dataset)
    if check_model and once(f"model:{cfg.model!r}:{cfg.dataset.image_size}"):
        _check_model(cfg)
    if check_hardware:
        from repro.threads import resolve_threads

        resolve_threads(cfg.training.threads)  # the cores of the node that trains
        _check_batch_fits_memory(cfg)
    if check_hardware and once(f"gpu:{cfg.gpu.name}"):
        from repro.environments import resolve_device

        resolve_device(cfg.gpu)
    if check_hardware and cfg.training.amp is not False and once(f"amp:{cfg.gpu.name}:{cfg.training.amp}"):
        from repro.environments import resolve_device
        from repro.precision import check_device_supports

        check_device_supports(cfg.training.amp, resolve_device(cfg.gpu).torch_device)
    limit_w = cfg.gpu.power_limit_w
    if check_hardware and limit_w is not None and once(f"power:{cfg.gpu.name}:{limit_w}"):
        from repro.energy.nvml import check_power_limit
        from repro.environments import resolve_device

        check_power_limit(resolve_device(cfg.gpu).torch_device, limit_w)
    if check_hardware and once(f"meters:{list(cfg.energy.meters)}"):
        from repro.energy import check_meters_available

        check_meters_available(list(cfg.energy.meters))  # e.g. energy=zeus where Zeus is not installed
    if once(f"tracking:{cfg.tracking.uri}"):
        from repro.tracking import check_tracking_uri

        check_tracking_uri(cfg.tracking.uri)
    if once(f"artifacts:{cfg.tracking.uri}:{cfg.tracking.experiment}"):
        from repro.tracking import check_artifact_root

        check_artifact_root(cfg.tracking.uri, cfg.tracking.experiment)


def _check_batch_fits_memory(cfg: Config) -> None:
    """Refuse an image size whose input batch alone outgrows this machine's memory (the meta-device check
    of `_check_model` allocates nothing, so it cannot see that)."""
    batch_bytes = cfg.training.batch_size * 3 * cfg.dataset.image_size**2 * 4  # float32 RGB
    memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if batch_bytes > memory_bytes:
        raise UserError(
            f"dataset.image_size={cfg.dataset.image_size}: a batch of {cfg.training.batch_size} such images "
            f"takes {batch_bytes / 1e9:.0f} GB, more than this machine's memory ({memory_bytes / 1e9:.0f} GB)"
        )


def _check_model(cfg: Config) -> None:
    """The model name exists, its weights file exists, and the image size suits it."""
    import torch

    from repro.models import check_input_size, create_model

    model_cfg = cfg.model
    if model_cfg.weights_file is not None and Path(model_cfg.weights_file).is_dir():
        raise UserError(
            f"model.weights_file={model_cfg.weights_file} is a folder; give the path of a checkpoint file"
        )
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
