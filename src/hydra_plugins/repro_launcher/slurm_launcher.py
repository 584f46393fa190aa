"""`hydra/launcher=slurm`: submit a sweep to SLURM, each job with its own `gpu=` profile's resources.

hydra-submitit-launcher gives every job of a sweep the same SLURM resources. This launcher groups the
jobs by their `gpu` choice and submits each group as one submitit job array with that profile's
gres, node feature constraint and partition, one node each and `--exclusive` by default. On the node,
each job runs exactly as under hydra-submitit-launcher (its `SlurmLauncher.__call__`).

Before anything is submitted it checks that `sbatch` is on PATH, that every profile has SLURM
resources and that the cluster accepts them (`sbatch --test-only`), and that the tracking URI can be
reached; each failure is one line and exit code 2. A failed job does not stop the others; at the
end it prints each job's state, and Hydra exits non-zero if any job failed.
"""

import logging
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from repro.errors import UserError, exit_on_user_error
from repro.hydra_adapter import job_exception

log = logging.getLogger(__name__)

#: SLURM job states after which a job will not run again (sacct and scontrol spell them the same).
_ENDED = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "TIMEOUT", "GONE",
}  # fmt: skip
#: How long to wait for the second sign that a job is over (see `ProfileSlurmLauncher._wait`).
_SETTLE_S = 10.0


class SweepJobsFailed(CompactHydraException):
    """Some jobs of a SLURM sweep failed; Hydra prints this message alone and exits with 1."""


@dataclass(frozen=True)
class _Resources:
    """What one `gpu=` profile asks SLURM for."""

    profile: str
    gres: str | None
    constraint: str | None
    partition: str | None

    def sbatch_args(self) -> list[str]:
        args = [f"--gres={self.gres}"] if self.gres else []
        args += [f"--constraint={self.constraint}"] if self.constraint else []
        return args + ([f"--partition={self.partition}"] if self.partition else [])


@dataclass
class _Job:
    """One job of the sweep, from composition to its outcome."""

    num: int
    overrides: list[str]
    resources: _Resources
    tracking_uri: str
    submitted: Any = None  # submitit.slurm.slurm.SlurmJob
    state: str = "NOT_SUBMITTED"
    ended_at: float | None = None
    result: JobReturn | None = None

    @property
    def slurm_id(self) -> str:
        return self.submitted.job_id if self.submitted is not None else "-"

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.status == JobStatus.COMPLETED


class ProfileSlurmLauncher(Launcher):
    """Hydra launcher; its settings are `hydra_plugins.repro_launcher.config.SlurmLauncherConf`."""

    def __init__(self, **params: Any) -> None:
        self.params = {
            key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            for key, value in params.items()
        }
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        with exit_on_user_error():
            jobs = self._preflight(job_overrides, initial_job_idx)
        self._submit(jobs)
        self._wait(jobs)
        self._report(jobs)
        return [job.result for job in jobs]  # type: ignore[misc]

    # -- before submitting ------------------------------------------------------------------------

    def _preflight(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[_Job]:
        if shutil.which("sbatch") is None:
            raise UserError(
                "hydra/launcher=slurm needs `sbatch`, which is not on PATH here; run the sweep on the "
                "cluster's login node, or use hydra/launcher=submitit_local on this machine"
            )
        try:
            import submitit  # noqa: F401
            from hydra_plugins.hydra_submitit_launcher import submitit_launcher  # noqa: F401
        except ImportError as error:
            raise UserError(
                f"hydra/launcher=slurm needs submitit and hydra-submitit-launcher ({error.name} is missing); "
                "install them with: pip install 'repro[slurm]'"
            ) from None
        assert self.config is not None and self.hydra_context is not None
        jobs = []
        for offset, overrides in enumerate(job_overrides):
            job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            jobs.append(
                _Job(
                    num=initial_job_idx + offset,
                    overrides=list(overrides),
                    resources=self._resources(job_cfg),
                    tracking_uri=job_cfg.tracking.uri,
                )
            )
        from repro.tracking import check_tracking_uri

        for uri in sorted({job.tracking_uri for job in jobs}):
            check_tracking_uri(uri)
        if self.params["check_resources"]:
            for resources in dict.fromkeys(job.resources for job in jobs):
                self._test_only(resources)
        return jobs

    def _resources(self, job_cfg: DictConfig) -> _Resources:
        profile = job_cfg.hydra.runtime.choices.get("gpu") or job_cfg.gpu.name
        slurm = job_cfg.gpu.slurm
        if not slurm.gres and not slurm.constraint:
            raise UserError(
                f"gpu={profile} has no SLURM resources (gpu.slurm.gres and gpu.slurm.constraint are both "
                "empty), so hydra/launcher=slurm cannot place it; pick a GPU profile, or set one of them "
                "in its YAML or on the command line, e.g. gpu.slurm.constraint=FEATURE"
            )
        return _Resources(
            profile=profile,
            gres=slurm.gres,
            constraint=slurm.constraint,
            partition=self.params["partition"] or slurm.partition,
        )

    def _sbatch_options(self) -> list[str]:
        """The options every job gets, whatever its profile, as sbatch flags."""
        params = self.params
        options = ["--nodes=1", f"--time={params['timeout_min']}"]
        options += ["--exclusive"] if params["exclusive"] else []
        options += [f"--cpus-per-task={params['cpus_per_task']}"] if params["cpus_per_task"] else []
        options += [f"--mem={params['mem_gb']}G"] if params["mem_gb"] else []
        options += [f"--account={params['account']}"] if params["account"] else []
        return options + ([f"--qos={params['qos']}"] if params["qos"] else [])

    def _test_only(self, resources: _Resources) -> None:
        """Ask SLURM whether it could ever run a job with these resources, without submitting one."""
        command = ["sbatch", "--test-only", "--wrap=true", *self._sbatch_options(), *resources.sbatch_args()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or [f"exit code {result.returncode}"]
            reason = lines[-1].removeprefix("sbatch: error: ")
            raise UserError(
                f"gpu={resources.profile} asks SLURM for {' '.join(resources.sbatch_args())} and the cluster "
                f"refuses ({reason}); set gpu.slurm.gres, gpu.slurm.constraint or gpu.slurm.partition "
                "to what `sinfo -o '%P %G %f'` lists"
            )

    # -- submitting and waiting -------------------------------------------------------------------

    def _submit(self, jobs: list[_Job]) -> None:
        """One submitit job array per profile; a group that SLURM refuses fails alone."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # The callable that runs on the node: upstream's, which composes and runs one job.
        on_node = SlurmLauncher()
        on_node.setup(hydra_context=self.hydra_context, task_function=self.task_function, config=self.config)
        params = self.params
        groups: dict[_Resources, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.resources, []).append(job)
        for resources, group in groups.items():
            executor = submitit.AutoExecutor(
                folder=params["submitit_folder"],
                cluster="slurm",
                slurm_max_num_timeout=params["max_num_timeout"],
            )
            executor.update_parameters(
                timeout_min=params["timeout_min"],
                cpus_per_task=params["cpus_per_task"],
                mem_gb=params["mem_gb"],
                nodes=1,
                tasks_per_node=1,
                name=params["name"],
                slurm_gres=resources.gres,
                slurm_constraint=resources.constraint,
                slurm_partition=resources.partition,
                slurm_exclusive=True if params["exclusive"] else None,
                slurm_account=params["account"],
                slurm_qos=params["qos"],
                slurm_setup=params["setup"],
                slurm_additional_parameters=params["additional_parameters"],
                slurm_array_parallelism=params["array_parallelism"],
                slurm_signal_delay_s=params["signal_delay_s"],
            )
            log.info(f"gpu={resources.profile}: {len(group)} job(s) with {' '.join(resources.sbatch_args())}")
            for job in group:
                log.info(f"\t#{job.num} : {' '.join(filter_overrides(job.overrides))}")
            try:
                submitted = executor.map_array(
                    on_node,
                    [job.overrides for job in group],
                    ["hydra.sweep.dir"] * len(group),
                    [job.num for job in group],
                    [f"job_id_for_{job.num}" for job in group],
                    [Singleton.get_state()] * len(group),
                )
            except submitit.core.utils.FailedJobError as error:
                reason = " ".join(str(error).split())
                for job in group:
                    job.state = "SUBMIT_FAILED"
                    job.result = _failed(job, f"sbatch refused it: {reason}")
                continue
            for job, slurm_job in zip(group, submitted, strict=True):
                job.submitted = slurm_job
                job.state = "PENDING"

    def _wait(self, jobs: list[_Job]) -> None:
        """Poll SLURM until every submitted job has ended and collect each job's outcome.

        A job is over when its result file is written and SLURM says it ended. Either alone is
        trusted after `_SETTLE_S`: a result whose state SLURM no longer reports, or an end without
        a result (killed, out of memory, timed out), which counts as a failure.
        """
        pending = [job for job in jobs if job.submitted is not None]
        while pending:
            states = _slurm_states([job.slurm_id for job in pending])
            still_pending = []
            for job in pending:
                job.state = states.get(job.slurm_id, job.state)
                ended = job.state.split()[0] in _ENDED
                has_result = job.submitted.paths.result_pickle.exists()
                if (ended or has_result) and job.ended_at is None:
                    job.ended_at = time.monotonic()
                settled = job.ended_at is not None and time.monotonic() - job.ended_at > _SETTLE_S
                if has_result and (ended or settled):
                    job.result = self._outcome(job)
                elif ended and settled:
                    job.result = _failed(job, f"it ended {job.state} without a result; see {_log_of(job)}")
                else:
                    still_pending.append(job)
            pending = still_pending
            if pending:
                time.sleep(self.params["poll_interval_s"])

    def _outcome(self, job: _Job) -> JobReturn:
        """The job's JobReturn from its result file; a crash outside the task becomes a failed one."""
        import submitit

        try:
            result: JobReturn = job.submitted.results()[0]
        except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as error:
            last_line = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            return _failed(job, f"{last_line}; see {_log_of(job)}")
        if result.status != JobStatus.COMPLETED:
            error = job_exception(result)
            return _failed(job, f"{type(error).__name__}: {error}; see {_log_of(job)}")
        return result

    def _report(self, jobs: list[_Job]) -> None:
        """Print one line per job; make every failed job raise one message that counts them."""
        print(f"\nSLURM jobs of this sweep ({len(jobs)}):")
        for job in jobs:
            outcome = "ok" if job.ok else "failed"
            print(
                f"  #{job.num:<3} {job.resources.profile:<10} slurm {job.slurm_id:<10} "
                f"{job.state.split()[0]:<13} {outcome:<6} {' '.join(filter_overrides(job.overrides))}"
            )
        failed = [job for job in jobs if not job.ok]
        if failed:
            names = ", ".join(f"#{job.num}" for job in failed)
            first = job_exception(failed[0].result)  # type: ignore[arg-type]
            error = SweepJobsFailed(
                f"{len(failed)} of {len(jobs)} SLURM jobs failed ({names}); first: {first}"
            )
            for job in failed:
                job.result.return_value = error  # type: ignore[union-attr]


def _failed(job: _Job, reason: str) -> JobReturn:
    failed = JobReturn(overrides=job.overrides, status=JobStatus.FAILED)
    failed.return_value = SweepJobsFailed(
        f"job #{job.num} ({' '.join(filter_overrides(job.overrides))}) failed: {reason}"
    )
    return failed


def _log_of(job: _Job) -> str:
    return str(job.submitted.paths.stderr) if job.submitted is not None else "the sbatch output above"


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM's state of each job (`123_4` for array tasks), from sacct or, without accounting, scontrol.

    scontrol only knows jobs that ended less than MinJobAge (default 300 s) ago; a job it no longer
    knows is reported as GONE.
    """
    base_ids = sorted({job_id.split("_")[0] for job_id in job_ids})
    sacct = subprocess.run(
        ["sacct", "-X", "--parsable2", "--noheader", "-o", "JobID,State", "-j", ",".join(base_ids)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if sacct.returncode == 0:
        states = {}
        for line in sacct.stdout.splitlines():
            job_id, _, state = line.partition("|")
            states[job_id] = state
        return states
    states = {}
    for base_id in base_ids:
        shown = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", base_id],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if shown.returncode != 0:
            states.update({job_id: "GONE" for job_id in job_ids if job_id.split("_")[0] == base_id})
            continue
        for line in shown.stdout.splitlines():
            fields = dict(token.split("=", 1) for token in line.split() if "=" in token)
            task = fields.get("ArrayTaskId")
            if task is None:
                states[fields.get("JobId", "")] = fields.get("JobState", "UNKNOWN")
                continue
            for task_id in _expand_tasks(task):
                states[f"{fields['ArrayJobId']}_{task_id}"] = fields.get("JobState", "UNKNOWN")
    return states


def _expand_tasks(spec: str) -> list[str]:
    """`3` -> [3]; `0-2,5%4` (pending array tasks) -> [0, 1, 2, 5]."""
    tasks = []
    for part in spec.split("%")[0].split(","):
        low, _, high = part.partition("-")
        tasks += [str(index) for index in range(int(low), int(high or low) + 1)]
    return tasks
