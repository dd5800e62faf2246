"""Work units through Ray Data, one kia engine per replica.

A stage hands over its work as units (a probe shard of facts, a chunk of an audit split) and a
function that does one unit with an engine. The units become a Ray dataset, one row and one block
each, and go through `map_batches` with a callable class: each of the `replicas` actors loads the
engine once and then does one unit per call, so Ray schedules and retries, and kia only says what
a unit is and where its result goes. Results come back to the driver as they finish, which writes
them (a stage's outputs stay where single-process runs put them, atomic and resumable).

Units and results cross processes pickled: both ends run the same kia, and kia pickles nothing it
did not make itself.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from kia.cluster.config import LOCAL, RAY_EXTRA, RayConfig
from kia.engines import Engine, EngineConfig
from kia.errors import ConfigError, EngineError, KiaError

Work = Callable[[Engine, Any], Any]


def require_ray() -> Any:
    """The `ray` module, or a one-line error naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library is the `ray[data]` part)
    except ImportError as exc:
        raise ConfigError(f"--ray needs Ray Data: {RAY_EXTRA} (the import failed: {exc})") from exc
    return ray


@contextmanager
def connected(config: RayConfig) -> Iterator[Any]:
    """Ray, connected to the cluster `config` names; a Ray instance started here stops on exit."""
    import logging

    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        address = None if config.address == LOCAL else config.address
        debug = bool(os.environ.get("KIA_DEBUG"))
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=debug,  # engines log a page per replica; the errors come back anyway
                logging_level=logging.INFO if debug else logging.WARNING,
                configure_logging=True,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot reach the Ray cluster at '{config.address}': {exc}") from exc
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = bool(os.environ.get("KIA_DEBUG"))
    context.print_on_execution_start = False
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def replica_resources(ray: Any, config: RayConfig, gpus_per_engine: int = 1) -> tuple[float, float]:
    """(CPUs, GPUs) per replica: what `config` asks for, else the defaults RayConfig describes."""
    total = ray.cluster_resources()
    cluster_gpus = float(total.get("GPU", 0))
    gpus = config.gpus if config.gpus is not None else (float(gpus_per_engine) if cluster_gpus else 0.0)
    if config.cpus is not None:
        cpus = config.cpus
    elif gpus:
        cpus = 1.0
    else:
        largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
        cpus = float(max(1, min(largest, total.get("CPU", 1) // config.replicas)))
    if config.address == LOCAL and (
        config.replicas * cpus > total.get("CPU", 0) or config.replicas * gpus > cluster_gpus
    ):
        raise ConfigError(
            f"{config.replicas} replicas of {cpus:g} CPUs and {gpus:g} GPUs do not fit this machine "
            f"({total.get('CPU', 0):g} CPUs, {cluster_gpus:g} GPUs): lower --replicas or --replica-cpus"
        )
    return cpus, gpus


class _Replica:
    """One engine, loaded once per actor; each call does one unit with it."""

    def __init__(self, engine: EngineConfig, work: Work, threads: int):
        if threads:  # a CPU replica: torch uses the CPUs Ray gave it, not every core of the node
            import torch

            torch.set_num_threads(threads)
        from kia.engines import load_engine

        self.engine = load_engine(engine)
        self.work = work

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        results = [pickle.dumps(self.work(self.engine, pickle.loads(p))) for p in batch["payload"]]
        return {"key": batch["key"], "result": results}


def map_units(
    units: Sequence[tuple[int, Any]],
    work: Work,
    engine: EngineConfig,
    config: RayConfig,
    on_result: Callable[[int, Any], None],
) -> None:
    """Run `work(engine, payload)` for every `(key, payload)` in `units` on `config.replicas`
    engine replicas, and call `on_result(key, result)` in this process as each one finishes."""
    if not units:
        return
    with connected(config) as ray:
        cpus, gpus = replica_resources(ray, config, engine.tensor_parallel_size)
        items = [{"key": key, "payload": pickle.dumps(payload)} for key, payload in units]
        # one block per unit, so an idle replica can take any unit that is left
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            _Replica,
            fn_constructor_kwargs={"engine": engine, "work": work, "threads": 0 if gpus else max(1, int(cpus))},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(config.replicas, len(items))),
            num_cpus=cpus,
            num_gpus=gpus,
        )
        with unwrapped_errors():
            for row in ds.iter_rows():
                on_result(int(row["key"]), pickle.loads(row["result"]))


@contextmanager
def unwrapped_errors() -> Iterator[None]:
    """A replica's KiaError is raised here as itself; anything else Ray raises becomes one line."""
    try:
        yield
    except KiaError:
        raise
    except Exception as exc:
        cause = root_cause(exc)
        if isinstance(cause, KiaError):
            raise cause from exc
        first = (str(cause).strip().splitlines() or [""])[-1][:500]
        raise EngineError(f"a Ray replica failed: {type(cause).__name__}: {first}") from exc


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: Ray wraps a replica's error as the `cause` of its own, and again
    in the driver's."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc
