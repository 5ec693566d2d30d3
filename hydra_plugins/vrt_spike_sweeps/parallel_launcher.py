"""``hydra/launcher=parallel``: the joblib launcher, with each job on a device of its own.

Hydra scans this module at every start: it imports nothing heavy at module level.
"""
from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

log = logging.getLogger(__name__)


def _execute_on_device(pool: Any, start_method: str, idx: int, overrides: Sequence[str], *args: Any) -> JobReturn:
    """In a worker process: take this worker's device, pin to it, run the job as the joblib launcher does."""
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    # A loky worker makes "loky" its default start method, whose Popen cannot start a plain
    # multiprocessing.Process: the job's DataLoader workers need the start method of the sweep's process.
    multiprocessing.set_start_method(start_method, force=True)
    device = pool.claim()
    device.pin_process()
    return execute_job(idx, [*overrides, *device.hydra_overrides()], *args)


class ParallelLauncher(JoblibLauncher):
    """Joblib's loky worker processes, ``n_jobs`` at once (default: one per device); every worker keeps one
    device of ``devices`` (default: every visible GPU, or on a CPU ``n_jobs`` shares of the cores) for
    all the jobs it runs (``vrt_spike.lit.devices``)."""

    def __init__(self, devices: list[str] | None = None, n_jobs: int | None = None, **joblib_kwargs: Any) -> None:
        super().__init__(**joblib_kwargs)
        self.devices = None if devices is None else [str(d) for d in devices]
        self.n_jobs = n_jobs

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from joblib import Parallel, delayed

        from vrt_spike.lit.devices import DevicePool

        setup_globals()
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        pool = DevicePool.from_config(self.devices, self.n_jobs, sweep_dir / ".devices")
        log.info("Parallel launcher: %d jobs, %d at once on %s, sweep dir %s", len(job_overrides), pool.n_jobs,
                 [d.spec for d in pool.devices], sweep_dir)
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
        singleton_state = Singleton.get_state()
        # loky: the joblib launcher's backend (Hydra cannot run jobs in threads)
        runs = Parallel(n_jobs=pool.n_jobs, backend="loky", **self.joblib)(
            delayed(_execute_on_device)(pool, multiprocessing.get_start_method(), initial_job_idx + idx, overrides,
                                        self.hydra_context, self.config, self.task_function, singleton_state)
            for idx, overrides in enumerate(job_overrides))
        return list(runs)
