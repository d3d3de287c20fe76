"""A toy trainer for the loop's tests: linear regression through the whole `Trainer`."""

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch.utils.data import Dataset

from pipelines.training.loop import Trainer
from pipelines.training.optim import Part, lr_scheduler
from pipelines.training.run_config import RunConfig


class Regression(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, dim: int = 3):
        super().__init__()
        self.linear = torch.nn.Linear(dim, 1)


class Points(Dataset):
    """y = x . (1, -2, 3) + 0.5, exactly."""

    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.x[i] @ torch.tensor([1.0, -2.0, 3.0]) + 0.5}


@dataclass
class ToyConfig(RunConfig):
    report_to: str = "none"
    checkpoint_every: int = 0
    learning_rate: float = 0.2


class ToyTrainer(Trainer):
    name = "toy"

    def build_dataset(self):
        return Points()

    def build_parts(self):
        model = Regression()
        opt = torch.optim.SGD(model.parameters(), lr=self.cfg.learning_rate)
        return [Part("model", model, opt, lr_scheduler(opt, "constant", 0, self.cfg.max_steps), self.cfg.grad_clip)]

    def micro_step(self, batch, generator):
        loss = (self.parts[0].model.linear(batch["x"]).squeeze(1) - batch["y"]).pow(2).mean()
        self.accelerator.backward(loss)
        return {"loss/total": loss.detach()}

    def export(self, model):
        return {"weight": model.linear.weight.flatten().tolist(), "bias": model.linear.bias.item()}
