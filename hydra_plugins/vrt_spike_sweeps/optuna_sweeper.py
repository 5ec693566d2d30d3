"""``hparams_search=optuna``: hydra-optuna-sweeper, resuming its study.

Re-running a search into its ``hydra.sweep.dir`` loads the study from its storage (the plugin's
``load_if_exists``). The plugin would then run ``n_trials`` more trials and number their jobs from 0
again, into the directories of the finished ones; this sweeper counts the study's finished trials
(complete or failed) towards ``n_trials`` and numbers new jobs after every trial the study holds.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        impl: Any = self.sweeper
        if impl.storage is None or impl.study_name is None:
            return
        import optuna

        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)  # the study's sqlite file lives there

        try:
            trials = optuna.load_study(study_name=impl.study_name, storage=impl.storage).get_trials(deepcopy=False)
        except KeyError:  # no such study yet: a new search
            return
        finished = sum(t.state.is_finished() for t in trials)
        log.info("Optuna study %s: %d trials finished of n_trials=%d; job numbers continue at %d", impl.study_name,
                 finished, impl.n_trials, len(trials))
        impl.n_trials = max(impl.n_trials - finished, 0)
        impl.job_idx = len(trials)
