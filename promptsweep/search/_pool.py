"""The resource pool a job's trials run on: this machine's embedded Ray, or a Ray cluster the driver
connects to (``ray_address``), and the check, before any trial, that one trial fits on one node."""

from __future__ import annotations

import os
from typing import Any

from promptsweep.exceptions import PromptsweepError, SpecError
from promptsweep.search._spec import JobSpec, check_resources, local_gpu_count


def ensure_ray(spec: JobSpec) -> bool:
    """Start an embedded local Ray (or connect to ``spec.ray_address``); return True if started here.

    The embedded instance is small for shared machines: ``num_cpus`` from the spec (default: all
    cores), no dashboard, a ``resources.object_store_memory_mb`` object store, driver logs off.
    """
    import signal
    import threading

    import ray

    if ray.is_initialized():
        return False
    # ray.init installs its own SIGTERM handler (clean up the node, then sys.exit), which would skip
    # the job's bookkeeping; a handler the process set itself (`promptsweep worker` / `run`: SIGTERM
    # interrupts the job) is put back, and run_job's `finally` shuts Ray down.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray runs workers at nice 15 by default; here the trials *are* the job's work (a shared machine
    # otherwise starves them). Read by the raylet that ray.init starts.
    os.environ.setdefault("RAY_worker_niceness", "0")
    r = spec.resources
    if spec.ray_address is None:
        ray.init(
            address="local",  # never attach to a cluster `ray start` left on this machine
            num_cpus=r.num_cpus or os.cpu_count() or 1,
            num_gpus=local_gpu_count(),
            include_dashboard=False,
            object_store_memory=r.object_store_memory_mb * 1024 * 1024,
            configure_logging=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )
    else:
        connect_ray(spec.ray_address)
    if main and callable(previous):
        signal.signal(signal.SIGTERM, previous)
    return True


#: Seconds a ``host:port`` ray_address has to accept a TCP connection before the job is refused.
CONNECT_TIMEOUT_S = 10.0


def connect_ray(address: str) -> None:
    """Connect this driver to the running Ray cluster at ``address`` (``auto``: the one this machine
    belongs to, or ``$RAY_ADDRESS``).

    Raises:
        PromptsweepError: nothing answers there, or the cluster refused this driver (names the
            address and how to start a cluster or pass its token).
    """
    import socket

    import ray

    shown = address if address != "auto" else f"auto (RAY_ADDRESS={os.environ.get('RAY_ADDRESS')!r})"
    target = address if address != "auto" else os.environ.get("RAY_ADDRESS") or ""
    host, _, port = target.removeprefix("ray://").rpartition(":")
    try:
        if host and port.isdigit():  # Ray itself retries an address that does not answer for minutes
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        ray.init(address=address, configure_logging=False, log_to_driver=False)
    except Exception as exc:
        ray.shutdown()
        text = f"{type(exc).__name__}: {exc}"
        if "token" in text.lower() or "authenticat" in text.lower():
            hint = (
                "the cluster uses token authentication: run this process with RAY_AUTH_MODE=token and "
                "the head's token (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)"
            )
        else:
            hint = (
                "start one with `ray start --head --port 6379` (and `ray start --address <head>:6379` on "
                "each other node), or leave ray_address out to run on this machine's embedded Ray"
            )
        raise PromptsweepError(
            f"ray_address: no Ray cluster accepted this driver at {shown}; {hint} "
            f"({text.splitlines()[0][:300] if text else ''})"
        ) from exc


def check_pool(spec: JobSpec) -> None:
    """:func:`check_nodes` on the live nodes of the Ray pool this driver is connected to."""
    import ray

    check_nodes(spec, [n for n in ray.nodes() if n.get("Alive")])


def check_nodes(spec: JobSpec, nodes: list[dict[str, Any]]) -> None:
    """Refuse, before any trial, a spec the live ``nodes`` (``ray.nodes()`` entries) cannot run: one
    trial asking for more CPUs or GPUs than any node has (a trial runs on one node), or a cluster of
    several machines with no ``ray_storage_path`` (the default, the job's directory on the driver's
    disk, is out of the other machines' reach, and a trial there would train for nothing).

    Raises:
        SpecError: naming the field and the numbers the cluster reports.
    """
    cpus = max((float(n["Resources"].get("CPU", 0)) for n in nodes), default=0.0)
    gpus = max((float(n["Resources"].get("GPU", 0)) for n in nodes), default=0.0)
    if spec.ray_address is None:
        pool = "this machine's embedded Ray"
    else:
        per_node = {
            kind: ", ".join(f"{v:g}" for v in sorted(float(n["Resources"].get(kind, 0)) for n in nodes))
            for kind in ("CPU", "GPU")
        }
        pool = (
            f"the largest of the {len(nodes)} live node(s) of the Ray cluster at {spec.ray_address!r} "
            f"(CPUs per node [{per_node['CPU']}], GPUs per node [{per_node['GPU']}])"
        )
    check_resources(spec, gpus_available=gpus, cpus_available=cpus, pool=pool)
    hosts = sorted({str(n.get("NodeManagerHostname")) for n in nodes})
    if spec.ray_address is not None and spec.ray_storage_path is None and len(hosts) > 1:
        raise SpecError(
            f"ray_storage_path: the Ray cluster at {spec.ray_address!r} has nodes on {len(hosts)} machines "
            f"({', '.join(hosts[:5])}{', ...' if len(hosts) > 5 else ''}); trials hand their adapters over "
            "through Ray Tune's storage, by default this job's directory on the driver's disk, which the "
            "other machines cannot reach: set ray_storage_path to a path every node mounts (NFS) or a "
            "bucket URI (s3://bucket/prefix)"
        )
