"""Training side: the LightningModule, losses and optimizers (the only place Lightning meets the models)."""

from vrt_spike.lit import config as _config  # noqa: E402,F401  (registers conf/'s resolvers)
