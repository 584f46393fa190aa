"""A real single-node SLURM cluster for tests: munged, slurmctld and slurmd on this machine.

Everything lives in one temporary folder (config, state, spool, logs, the munge key and socket) and
the daemons listen on free ports, so the cluster leaves the machine as it found it and does not clash
with a system SLURM. The daemons run in the foreground as children of the test process and are
stopped by their PIDs. Clients find the cluster through the `SLURM_CONF` environment variable.

Run as root: slurmd must start job steps as the submitting user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "sinfo", "squeue")
TEMPLATE = Path(__file__).with_name("slurm.conf.template")


def missing_binaries() -> list[str]:
    """The SLURM and munge programs this machine lacks (`apt-get install -y slurm-wlm munge`)."""
    return [
        name
        for name in DAEMONS + CLIENTS
        if shutil.which(name) is None and not Path("/usr/sbin", name).exists()
    ]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


@dataclass
class SlurmCluster:
    """One node, `features` standing in for GPU types, one default partition `debug`."""

    root: Path
    features: tuple[str, ...] = ("fakegpu_a", "fakegpu_b")
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    _processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (sbatch, scontrol, ...) to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout_s: float = 60.0) -> None:
        """Write the config, start the three daemons and wait for the node to be idle."""
        for sub in ("state", "spool", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        socket_path = self.root / "munge" / "munge.socket"
        self.conf.write_text(
            TEMPLATE.read_text().format(
                root=self.root,
                node=self.node,
                munge_socket=socket_path,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                cpus=os.cpu_count(),
                memory_mb=int(_memory_mb() * 0.9),
                features=",".join(self.features),
            )
        )
        self._spawn(
            "munged",
            [
                _binary("munged"),
                "--foreground",
                "--force",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--seed-file={self.root / 'munge' / 'seed'}",
                f"--log-file={self.root / 'munge' / 'munged.log'}",
            ],
        )
        self._wait_for(socket_path.exists, timeout_s, "munged to create its socket")
        self._spawn("slurmctld", [_binary("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait_for(self._controller_answers, timeout_s, "slurmctld to answer")
        self._spawn("slurmd", [_binary("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait_for(self._node_idle, timeout_s, f"node {self.node} to be idle")

    def stop(self) -> None:
        """Stop the daemons by PID, newest first: SIGTERM, then SIGKILL after 10 s."""
        for name in reversed(list(self._processes)):
            process = self._processes.pop(name)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            process.log.close()  # type: ignore[attr-defined]

    def scontrol(self, *args: str) -> str:
        return subprocess.run(
            ["scontrol", *args], env=self.env, capture_output=True, text=True, timeout=30, check=True
        ).stdout

    def logs(self) -> str:
        """The tail of every daemon's log, for failure messages."""
        parts = []
        for log in sorted(self.root.glob("*.out")) + sorted(self.root.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-20:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.root / f"{name}.out").open("w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.root)
        process.log = log  # type: ignore[attr-defined]
        self._processes[name] = process

    def _controller_answers(self) -> bool:
        return (
            subprocess.run(["scontrol", "ping"], env=self.env, capture_output=True, text=True).returncode == 0
        )

    def _node_idle(self) -> bool:
        result = subprocess.run(
            ["sinfo", "--noheader", "-n", self.node, "-o", "%T"], env=self.env, capture_output=True, text=True
        )
        return result.stdout.strip().rstrip("*") == "idle"

    def _wait_for(self, condition, timeout_s: float, what: str) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {process.returncode} while waiting for {what}:\n{self.logs()}"
                    )
            if condition():
                return
            time.sleep(0.5)
        raise TimeoutError(f"gave up after {timeout_s:.0f} s waiting for {what}:\n{self.logs()}")
