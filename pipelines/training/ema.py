"""The exponential moving average of a run's main model: diffusers' `EMAModel`, kept in float32 (so small
updates of bf16 weights do not round away), swapped into the model for validation, copied out for export."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from diffusers.training_utils import EMAModel


class FloatEMA:
    """Checkpoint it like any accelerate object (`state_dict` / `load_state_dict`)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = model
        self.ema = EMAModel(model.parameters(), decay=decay, foreach=True, model_cls=type(model),
                            model_config=model.config)

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state)

    def to(self, device: torch.device) -> None:
        self.ema.to(device, dtype=torch.float32)

    def step(self) -> None:
        self.ema.step(self.model.parameters())

    @property
    def shadow_params(self) -> list[torch.Tensor]:
        return self.ema.shadow_params

    @contextmanager
    def weights(self):
        """Temporarily load the EMA weights into the model (restored bit-exactly afterwards)."""
        params = list(self.model.parameters())
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    def copy(self, device: torch.device) -> torch.nn.Module:
        """A fresh model from the same config holding the EMA weights, in eval mode on `device`."""
        final = type(self.model).from_config(self.model.config)
        with torch.no_grad():
            for param, shadow in zip(final.parameters(), self.ema.shadow_params):
                param.copy_(shadow.reshape(param.shape))  # DeepSpeed runs hold 0-dim parameters as (1,)
        return final.to(device).eval()
