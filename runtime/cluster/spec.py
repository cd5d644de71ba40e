"""Where a cluster comes from: TF_CONFIG or the cluster flags, checked into a ClusterTask.

Nothing here needs TensorFlow: the launcher and a script's flag parsing read it alone.
"""

import json
import os
import re
from dataclasses import dataclass

from runtime.errors import UserError
from runtime.options import Group, Option

ENV = "TF_CONFIG"
JOBS = ("chief", "worker", "ps")
DEFAULT_TIMEOUT = 60.0
DEFAULT_PS_IDLE_TIMEOUT = 600.0
MIN_PS_IDLE_TIMEOUT = 5.0  # ten heartbeats: a late one or two must not stop a ps
HEARTBEAT_SECS = 0.5  # how often a training task tells every ps it is alive
_ADDRESS = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class ClusterTask:
    """One task of a cluster: which job and index this process is, and the whole layout.

    Attributes:
      spec: {job: (address, ...)} for the jobs present, addresses as "host:port".
      job: "chief", "worker" or "ps".
      index: the task's index within its job.
      sync: aggregate gradients with SyncReplicasOptimizer instead of asynchronous updates.
      timeout: seconds a task waits for another before it gives up with an error.
      idle_timeout: seconds a ps task serves without hearing from any training task
        before it stops with an error.
    """

    spec: dict
    job: str
    index: int
    sync: bool = False
    timeout: float = DEFAULT_TIMEOUT
    idle_timeout: float = DEFAULT_PS_IDLE_TIMEOUT

    @property
    def name(self):
        """ "worker 1", "ps 0": how the task is named in messages."""
        return f"{self.job} {self.index}"

    @property
    def address(self):
        return self.spec[self.job][self.index]

    @property
    def is_ps(self):
        return self.job == "ps"

    @property
    def is_chief(self):
        """The chief task, or worker 0 when the cluster has no chief job."""
        return self.job == "chief" or (self.job == "worker" and self.index == 0 and "chief" not in self.spec)

    @property
    def device(self):
        return f"/job:{self.job}/task:{self.index}"

    @property
    def target(self):
        """The session target of this task's own server (it listens on every interface)."""
        return f"grpc://localhost:{self.address.rsplit(':', 1)[1]}"

    @property
    def replicas(self):
        """The training tasks (chief first, then workers), as (job, index) pairs."""
        return [(job, i) for job in ("chief", "worker") for i in range(len(self.spec.get(job, ())))]

    @property
    def num_replicas(self):
        return len(self.replicas)

    @property
    def replica_index(self):
        """This task's position among the training tasks: 0 for the chief."""
        return self.replicas.index((self.job, self.index))

    def describe(self):
        """A JSON-ready record of the cluster, for config.json."""
        return {"spec": {job: list(hosts) for job, hosts in self.spec.items()}, "sync_replicas": self.sync}


# --ps-hosts ... --cluster-timeout: how a script becomes one task of a cluster. Not saved in
# config.json: the same run may go on as a local process or in another cluster.
CLUSTER_FLAGS = Group(
    "cluster",
    (
        Option("--ps-hosts", config=False, help="comma-separated host:port of the parameter-server tasks"),
        Option(
            "--worker-hosts",
            config=False,
            help="comma-separated host:port of the worker tasks; worker 0 is the chief",
        ),
        Option("--job-name", config=False, help="this task's job: ps or worker"),
        Option("--task-index", type=int, config=False, help="this task's index within its job (default: 0)"),
        Option(
            "--sync-replicas",
            action="store_true",
            config=False,
            help="aggregate one gradient from every worker per step (SyncReplicasOptimizer) instead of "
            "asynchronous updates",
        ),
        Option(
            "--cluster-timeout",
            type=float,
            default=DEFAULT_TIMEOUT,
            config=False,
            help="seconds a task waits for a parameter server or for the chief before it stops with an error "
            "(default: %(default)s)",
        ),
        Option(
            "--ps-idle-timeout",
            type=float,
            default=DEFAULT_PS_IDLE_TIMEOUT,
            config=False,
            help="seconds a ps task serves without hearing from any training task (each says it is alive every "
            f"{HEARTBEAT_SECS:g} s once its session is up) before it stops with an error; counted from its start "
            "too (default: %(default)s)",
        ),
    ),
    description="run as one task of a TensorFlow cluster (parameter servers and workers); the TF_CONFIG "
    "environment variable does the same; without either the run is one local process",
)


def parse_address(text, where):
    """Checks one "host:port" (IPv6 as "[::1]:port"); returns it stripped.

    Raises:
      UserError: naming `where` when the text has no port or a port outside 1..65535.
    """
    address = text.strip()
    match = _ADDRESS.match(address)
    if not match:
        raise UserError(f"{where}: {text!r} is not host:port")
    if not 1 <= int(match.group("port")) <= 65535:
        raise UserError(f"{where}: port {match.group('port')} of {address} is outside 1..65535")
    return address


def _check_spec(spec, where):
    for job in spec:
        if job not in JOBS:
            raise UserError(f"{where}: unknown job {job!r}; the jobs are {', '.join(JOBS)}")
    if not spec.get("ps"):
        raise UserError(f"{where}: the cluster has no ps task; at least one parameter server is needed")
    if not spec.get("worker") and not spec.get("chief"):
        raise UserError(f"{where}: the cluster has no worker task")
    if len(spec.get("chief", ())) > 1:
        raise UserError(f"{where}: a cluster has at most one chief, got {len(spec['chief'])}")
    seen = {}
    for job, hosts in spec.items():
        for i, address in enumerate(hosts):
            if address in seen:
                raise UserError(f"{where}: {address} is given to both {seen[address]} and {job} {i}")
            seen[address] = f"{job} {i}"


def _check_task(spec, job, index, where):
    if job not in JOBS:
        raise UserError(f"{where}: unknown job {job!r}; the jobs are {', '.join(JOBS)}")
    if job not in spec or not spec[job]:
        raise UserError(f"{where}: job {job!r} has no hosts in the cluster")
    if isinstance(index, bool) or not isinstance(index, int):
        raise UserError(f"{where}: task index must be an integer, got {index!r}")
    if not 0 <= index < len(spec[job]):
        raise UserError(
            f"{where}: task index {index} is out of range for job {job!r}, which has {len(spec[job])} "
            f"task{'s' if len(spec[job]) != 1 else ''} (0..{len(spec[job]) - 1})"
        )


def parse_tf_config(text):
    """(spec, job, index) from the text of TF_CONFIG, checked.

    Raises:
      UserError: malformed JSON, a missing or unknown job, an index out of range, a bad address.
    """
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{ENV} is not valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(config, dict):
        raise UserError(f"{ENV} must be a JSON object with 'cluster' and 'task', got {type(config).__name__}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise UserError(f'{ENV} has no \'cluster\' object (e.g. {{"ps": ["host:2222"], "worker": [...]}})')
    if not isinstance(task, dict) or "type" not in task:
        raise UserError(f"{ENV} has no 'task' object with a 'type' and an 'index'")
    spec = {}
    for job, hosts in cluster.items():
        if not isinstance(hosts, list) or not all(isinstance(host, str) for host in hosts):
            raise UserError(f'{ENV}: cluster job {job!r} must be a list of "host:port" strings')
        spec[job] = tuple(parse_address(host, f"{ENV} job {job!r}") for host in hosts)
    _check_spec(spec, ENV)
    job, index = task["type"], task.get("index", 0)
    _check_task(spec, job, index, ENV)
    return spec, job, index


def parse_flags(ps_hosts, worker_hosts, job_name, task_index):
    """(spec, job, index) from the classic flags, or None when none of them is given.

    Raises:
      UserError: some flags given but not all the cluster needs, or bad values.
    """
    if ps_hosts is None and worker_hosts is None and job_name is None and task_index is None:
        return None
    missing = [
        flag
        for flag, value in (("--ps-hosts", ps_hosts), ("--worker-hosts", worker_hosts), ("--job-name", job_name))
        if not value
    ]
    if missing:
        raise UserError(f"a cluster given by flags also needs {' and '.join(missing)}")
    spec = {
        "ps": tuple(parse_address(host, "--ps-hosts") for host in ps_hosts.split(",")),
        "worker": tuple(parse_address(host, "--worker-hosts") for host in worker_hosts.split(",")),
    }
    _check_spec(spec, "--ps-hosts/--worker-hosts")
    index = 0 if task_index is None else task_index
    if job_name not in ("ps", "worker"):
        raise UserError(f"--job-name must be ps or worker, got {job_name!r}")
    _check_task(spec, job_name, index, f"--job-name {job_name} --task-index")
    return spec, job_name, index


@dataclass(frozen=True)
class ClusterFlags:
    """The CLUSTER_FLAGS of a run, parsed (a script's Flags.record makes it once per run)."""

    ps_hosts: str | None
    worker_hosts: str | None
    job_name: str | None
    task_index: int | None
    sync_replicas: bool
    cluster_timeout: float
    ps_idle_timeout: float


def task_from(flags, environ=None):
    """The task this process is, from TF_CONFIG and the cluster flags; None for a local run.

    When both are given they must describe the same cluster and task.

    Args:
      flags: the run's ClusterFlags.
      environ: the environment to read TF_CONFIG from (default: os.environ).

    Returns:
      A ClusterTask, or None when neither TF_CONFIG nor any cluster flag is set.

    Raises:
      UserError: a malformed or inconsistent cluster, with one line naming the value.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(ENV, "")
    from_env = parse_tf_config(text) if text.strip() else None
    from_flags = parse_flags(flags.ps_hosts, flags.worker_hosts, flags.job_name, flags.task_index)
    if from_env and from_flags and from_env != from_flags:
        raise UserError(
            f"{ENV} ({from_env[1]} {from_env[2]} of {_layout(from_env[0])}) and the cluster flags "
            f"({from_flags[1]} {from_flags[2]} of {_layout(from_flags[0])}) disagree; give one of them"
        )
    chosen = from_env or from_flags
    if chosen is None:
        if flags.sync_replicas:
            raise UserError("--sync-replicas needs a cluster (TF_CONFIG or --ps-hosts/--worker-hosts)")
        return None
    if not 0 < flags.cluster_timeout < float("inf"):
        raise UserError(f"--cluster-timeout must be a positive number of seconds, got {flags.cluster_timeout}")
    if not MIN_PS_IDLE_TIMEOUT <= flags.ps_idle_timeout < float("inf"):
        raise UserError(
            f"--ps-idle-timeout must be a finite number of seconds, at least {MIN_PS_IDLE_TIMEOUT:g}, "
            f"got {flags.ps_idle_timeout:g}"
        )
    spec, job, index = chosen
    return ClusterTask(
        spec,
        job,
        index,
        sync=bool(flags.sync_replicas),
        timeout=float(flags.cluster_timeout),
        idle_timeout=float(flags.ps_idle_timeout),
    )


def _layout(spec):
    return ", ".join(f"{len(hosts)} {job}" for job, hosts in spec.items())


def owns_model_dir(flags):
    """Whether this process may create, lock and write the model dir: a local run or the chief.

    Args:
      flags: the run's ClusterFlags.
    """
    task = task_from(flags)
    return task is None or task.is_chief


def tf_config(spec, job, index):
    """The TF_CONFIG text of one task."""
    return json.dumps({"cluster": spec, "task": {"type": job, "index": index}})


def replica_seed(seed, task):
    """The data-order seed of a training task: the run's seed on the chief, distinct ones elsewhere."""
    return seed if task is None else seed + task.replica_index * 2**32
