"""Optimizers that torch and transformers lack: `optimizer=lion` and `optimizer=tiger`."""
from lit_models.components.optim.lion import Lion
from lit_models.components.optim.tiger import Tiger

__all__ = ["Lion", "Tiger"]
