"""Training side: the LightningModule, losses and optimizers (the only place Lightning meets the models)."""
