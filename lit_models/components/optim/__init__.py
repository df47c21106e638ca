"""Optimizers that torch and transformers lack (`optimizer=lion`, `optimizer=tiger`), and transformers' Adafactor
stepped without host syncs (`optimizer=adafactor`)."""
from lit_models.components.optim.adafactor import Adafactor
from lit_models.components.optim.lion import Lion
from lit_models.components.optim.tiger import Tiger

__all__ = ["Adafactor", "Lion", "Tiger"]
