"""Schema and defaults of `hydra/launcher=slurm`, registered in Hydra's ConfigStore.

This module imports neither submitit nor hydra-submitit-launcher: Hydra imports every plugin module
on start-up, also for users who did not install the `slurm` extra. Nor does it use
`from __future__ import annotations`: Hydra loads plugin modules outside `sys.modules`, where
dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class SlurmLauncherConf:
    """SLURM settings shared by every job of a sweep.

    What a job runs on (gres, node feature constraint, partition) comes from its `gpu=` profile's
    `slurm` block; `partition` here overrides the profiles' partitions.
    """

    _target_: str = "hydra_plugins.repro_launcher.slurm_launcher.ProfileSlurmLauncher"
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"  # sbatch scripts, logs and pickles
    timeout_min: int = 60  # wall-clock limit of one job
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    partition: str | None = None  # overrides every profile's gpu.slurm.partition
    exclusive: bool = True  # no other job on the node while energy is measured
    account: str | None = None
    qos: str | None = None
    name: str = "${hydra.job.name}"
    setup: list[str] | None = None  # shell lines run before the job, e.g. "module load cuda"
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # more sbatch options
    array_parallelism: int = 256  # jobs of one profile running at once
    signal_delay_s: int = 120  # SIGUSR1 this long before the time limit
    max_num_timeout: int = 0  # resubmissions after a timeout
    poll_interval_s: float = 10.0  # how often the submitting process asks SLURM for job states
    check_resources: bool = True  # `sbatch --test-only` each profile's resources before submitting


ConfigStore.instance().store(group="hydra/launcher", name="slurm", node=SlurmLauncherConf, provider="repro")
