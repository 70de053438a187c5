"""Start a local Ray instance, retrying the one start failure that is transient.

`ray.init` launches its daemons with `subprocess.Popen(preexec_fn=...)`, which runs Python code in the forked
child before exec. If another thread of this process holds a lock that code needs at the moment of the fork
(the import lock, say), the child never execs: the raylet never starts, and after 30 s (fixed inside Ray) the
driver gives up with "The current node timed out during startup". A long-lived process with threads (a test
session, a notebook, a controller with its metrics server) meets this now and then; a second attempt does not.

Between attempts the half-started instance is taken down: Ray keeps no handle on it when its start fails, so
the processes this call spawned (GCS, monitor, dashboard, the stuck child) are killed here. Only children
of this process born during the attempt are touched, never another Ray on the machine.
"""

from __future__ import annotations

import logging

import psutil
from tenacity import Retrying, retry_if_exception, stop_after_attempt

log = logging.getLogger("mtr.raystart")

ATTEMPTS = 3
_STARTUP_TIMEOUT = "timed out during startup"


def start_local_ray(*, num_cpus: int | None, namespace: str) -> None:
    """`ray.init` on this machine, retried (up to ATTEMPTS) when its node times out during startup."""
    import ray

    retrying = Retrying(
        stop=stop_after_attempt(ATTEMPTS),
        retry=retry_if_exception(is_startup_timeout),
        before_sleep=lambda state: log.warning(
            "local Ray did not start (attempt %d of %d): %s; retrying",
            state.attempt_number,
            ATTEMPTS,
            state.outcome.exception(),
        ),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            before = _own_children()
            try:
                ray.init(num_cpus=num_cpus, namespace=namespace, include_dashboard=False)
            except Exception as error:
                if is_startup_timeout(error):
                    ray.shutdown()
                    _kill_children_except(before)
                raise


def is_startup_timeout(error: BaseException) -> bool:
    return _STARTUP_TIMEOUT in str(error)


def _own_children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


def _kill_children_except(keep: set[int]) -> None:
    """Kill this process's descendants that are not in `keep`, and reap them."""
    spawned = [child for child in psutil.Process().children(recursive=True) if child.pid not in keep]
    for child in spawned:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(spawned, timeout=10)
    if alive:
        log.warning("could not stop %d process(es) of the failed Ray start: %s", len(alive), alive)
