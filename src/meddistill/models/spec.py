"""The one description of a network that configs, artifacts and `build_model` share."""

from __future__ import annotations

from dataclasses import dataclass

from meddistill.errors import OptionError
from meddistill.utils import Options

NORMS = ("instancenorm", "batchnorm", "groupnorm", "layernorm", "none")
ACTS = ("relu", "leakyrelu", "sigmoid", "gelu")
POOLINGS = ("avgpooling", "maxpooling", "none")


@dataclass
class ModelSpec:
    """Architecture name plus the ConvNet knobs of the reference code (net_depth, net_width, ...).

    `depth`, `width`, `act` and `pooling` shape the ConvNet only; `norm` applies to ConvNet,
    VGG11 and ResNet18. LeNet and AlexNet have no normalisation layers (as in the references)
    and ignore every option but the name.
    """

    name: str = "convnet"
    depth: int = 3
    width: int = 128
    norm: str = "instancenorm"
    act: str = "relu"
    pooling: str = "avgpooling"

    def __post_init__(self) -> None:
        # Fail when a config is loaded, not halfway through a run.
        from meddistill.models.registry import available_models

        self.name = str(self.name).lower()
        check = Options("model", self)
        if self.name not in available_models():
            valid = ", ".join(available_models())
            raise OptionError("model", "name", f"is an unknown model '{self.name}'; valid: {valid}")
        check.choice("norm", NORMS)
        check.choice("act", ACTS)
        check.choice("pooling", POOLINGS)
        check.counts("depth", "width")
