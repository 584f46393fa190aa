"""Small MLflow stores written by hand, shaped like what `python -m repro.train` records.

Each holds only what `repro.stats.runs.load_mlflow` and the report read (names from `repro.names`),
with values of the size a `make run` on CPU gives (the energies 3.5% apart, as in the report that issue 20
quotes), so that a report test needs no training.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from repro import names

#: `make run`: one job per model on the CPU, seed 0, energy partly estimated (CodeCarbon's TDP model).
FIRST_SWEEP_JOBS: tuple[tuple[str, dict[str, float]], ...] = (
    ("mobilenet_v2", {names.ENERGY_J_PER_IMAGE: 0.8200, names.F1: 0.5970, names.ACCURACY: 0.5500,
                      names.GFLOPS: 0.00391488, names.PARAMS_M: 0.688961, names.DURATION_MS_PER_IMAGE: 97.18,
                      names.IMAGES_SEEN: 3771, names.TRAIN_IMAGES_SEEN: 2640}),
    ("resnet18", {names.ENERGY_J_PER_IMAGE: 0.8497, names.F1: 0.6212, names.ACCURACY: 0.5800,
                  names.GFLOPS: 0.0371, names.PARAMS_M: 11.18, names.DURATION_MS_PER_IMAGE: 101.4,
                  names.IMAGES_SEEN: 3771, names.TRAIN_IMAGES_SEEN: 2640}),
)  # fmt: skip


def first_sweep_store(folder: Path, seeds: int = 1, experiment: str = "repro") -> str:
    """Write a store holding one finished `make run` sweep (a parent run, two CPU jobs); return its URI.

    With `seeds` > 1, each model has that many jobs (seeds 0, 1, ...), a little apart in energy and F1.
    """
    import mlflow

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment(experiment)
    parent = client.create_run(experiment_id, run_name="sweep-first", tags={names.TAG_KIND: names.KIND_SWEEP})
    for (model, metrics), seed in itertools.product(FIRST_SWEEP_JOBS, range(seeds)):
        tags = {
            "mlflow.parentRunId": parent.info.run_id,
            names.TAG_MODEL: model,
            names.TAG_GPU: "cpu",
            names.TAG_SEED: str(seed),
            names.TAG_DEVICE_NAME: "cpu",
            names.TAG_ENERGY_ESTIMATED: "true",
            names.energy_method_tag("cpu"): "tdp-load-estimate",
            names.energy_method_tag("gpu"): "not-measured",
            names.energy_method_tag("ram"): "constant-estimate",
        }
        run = client.create_run(experiment_id, run_name=f"{model}-cpu-s{seed}", tags=tags)
        params = {names.PARAM_GPU_LABEL: "CPU", names.PARAM_GPU_TDP_W: "None", "seed": str(seed)}
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        spread = {names.ENERGY_J_PER_IMAGE: 0.002 * seed, names.F1: -0.003 * seed}
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value + spread.get(key, 0.0))
        client.set_terminated(run.info.run_id, "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")
    return uri


def settings_store(
    folder: Path,
    batch_sizes: tuple[int, ...] = (16, 64),
    seeds: int = 3,
    models: tuple[str, ...] = ("mobilenet_v2", "resnet18"),
    amp: tuple[str, ...] = ("False",),
    lacking_batch_size: int = 0,
) -> str:
    """A store of a CPU sweep over settings (`training.batch_size`, `training.amp`), as `repro.train` logs it.

    Every (model, batch size, precision) cell has `seeds` finished jobs; a larger batch costs less energy
    per image. The first `lacking_batch_size` jobs have no `training.batch_size` param (recorded before
    the setting was logged). Returns the store's URI; the experiment is "settings".
    """
    import mlflow

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment("settings")
    cells = itertools.product(enumerate(FIRST_SWEEP_JOBS[: len(models)]), batch_sizes, amp, range(seeds))
    for job, ((index, (_, metrics)), batch, precision, seed) in enumerate(cells):
        model = models[index]
        tags = {names.TAG_MODEL: model, names.TAG_GPU: "cpu", names.TAG_SEED: str(seed)}
        tags[names.TAG_DEVICE_NAME] = "cpu"
        run = client.create_run(experiment_id, run_name=f"{model}-cpu-bs{batch}-s{seed}", tags=tags)
        params = {names.PARAM_GPU_LABEL: "CPU", names.PARAM_GPU_TDP_W: "None", "training.amp": precision}
        if job >= lacking_batch_size:
            params["training.batch_size"] = str(batch)
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        scale = {names.ENERGY_J_PER_IMAGE: 16 / batch * (0.8 if precision == "bf16" else 1.0), names.F1: 1.0}
        spread = {names.ENERGY_J_PER_IMAGE: 0.01 * seed, names.F1: -0.003 * seed}
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value * scale.get(key, 1.0) + spread.get(key, 0.0))
        client.set_terminated(run.info.run_id, "FINISHED")
    return uri
