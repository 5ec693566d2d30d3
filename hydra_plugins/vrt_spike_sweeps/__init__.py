"""vrt-spike's Hydra plugins (Hydra loads plugins only from the ``hydra_plugins`` package): the parallel
launcher (``hydra/launcher=parallel``) and the resumable Optuna sweeper (``hparams_search=optuna``).
Thin subclasses of the joblib launcher and the Optuna sweeper; the logic lives in ``vrt_spike.lit``."""
