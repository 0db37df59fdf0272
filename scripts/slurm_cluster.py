"""A one-node SLURM cluster on this machine: munged, slurmctld and slurmd on localhost, every
file of theirs in one folder. The tests start one to run the sbatch files of configs/slurm/;
on a laptop it tries them before a real cluster does:

    sudo python scripts/slurm_cluster.py start /tmp/cluster    # prints the SLURM_CONF to export
    export SLURM_CONF=/tmp/cluster/slurm.conf
    sbatch --gpus-per-node=0 --ntasks-per-node=2 --cpus-per-task=1 configs/slurm/fit.sbatch \
        --config configs/fast.yaml --data.data_dir ../shared/data
    sudo python scripts/slurm_cluster.py stop /tmp/cluster

Needs Debian's `slurm-wlm` and `munge` (apt-get install slurm-wlm munge), and root: slurmd
starts each job as the user who submitted it. Processes are tracked without cgroups, so it also
runs in a container.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order
START_SECONDS = 30


class ClusterError(RuntimeError):
    """The cluster cannot start here; the message says why in one line."""


def config_text(folder: Path, host: str, cpus: int) -> str:
    ports = free_ports(2)
    return f"""\
ClusterName=mnistlit
SlurmctldHost={host}
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge.socket
# no cgroups: processes tracked by their parent ids, no task binding, no accounting
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# seconds between the SIGTERM that stops a job (scancel, requeue, time limit) and the SIGKILL
KillWait=30
MinJobAge=300
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start(folder: Path) -> Path:
    """Start the cluster with its files in `folder` and wait for its node; the slurm.conf path
    (what SLURM_CONF must name for sbatch, srun, squeue, ...)."""
    missing = [name for name in ("munged", "slurmctld", "slurmd", "sbatch") if not find(name)]
    if missing:
        raise ClusterError(f"{', '.join(missing)} not installed: apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        raise ClusterError("needs root: slurmd starts each job as the user who submitted it")
    folder = Path(folder).resolve()
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # munged: its socket's folder is reachable by every user, writable by one
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = folder / "slurm.conf"
    conf.write_text(config_text(folder, socket.gethostname().split(".")[0], os.cpu_count() or 1))
    files = {"socket": "munge.socket", "pid-file": "munged.pid", "log-file": "munged.log"}
    daemon(
        "munged",
        "--force",
        f"--key-file={key}",
        f"--seed-file={folder}/munged.seed",
        *(f"--{option}={folder / name}" for option, name in files.items()),
    )
    daemon("slurmctld", "-f", str(conf))
    daemon("slurmd", "-f", str(conf))
    wait_for_node(conf, folder)
    return conf


def find(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def daemon(name: str, *args: str) -> None:
    done = subprocess.run([find(name), *args], capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip() or f"exit status {done.returncode}").splitlines()[-1]
        raise ClusterError(f"{name} did not start: {reason}")


def wait_for_node(conf: Path, folder: Path) -> None:
    env = {**os.environ, "SLURM_CONF": str(conf)}
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        states = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"], env=env, capture_output=True, text=True
        ).stdout.split()
        if states == ["idle"]:
            return
        time.sleep(0.5)
    log = (
        (folder / "slurmd.log").read_text().strip().splitlines()
        if (folder / "slurmd.log").exists()
        else []
    )
    raise ClusterError(f"the node did not become idle in {START_SECONDS} s: {log[-1:]}")


def stop(folder: Path) -> None:
    """Stop the daemons started in `folder` (by the PIDs they wrote), and wait for them."""
    for name in DAEMONS:
        pid_file = Path(folder) / f"{name}.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            continue  # not started, or gone
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("folder", type=Path, help="the cluster's files: config, logs, state")
    options = parser.parse_args()
    if options.action == "stop":
        stop(options.folder)
        return
    try:
        conf = start(options.folder)
    except ClusterError as error:
        stop(options.folder)
        sys.exit(f"error: {error}")
    print(f"export SLURM_CONF={conf}")


if __name__ == "__main__":
    main()
