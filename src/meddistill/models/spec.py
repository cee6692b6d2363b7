"""The one description of a network that configs, artifacts and `build_model` share."""

from __future__ import annotations

from dataclasses import dataclass

from meddistill.errors import ConfigError

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
        if self.name not in available_models():
            raise ConfigError(
                f"unknown model '{self.name}' (option model.name); "
                f"valid: {', '.join(available_models())}"
            )
        _check_choice("model.norm", self.norm, NORMS)
        _check_choice("model.act", self.act, ACTS)
        _check_choice("model.pooling", self.pooling, POOLINGS)
        if int(self.depth) < 1:
            raise ConfigError(f"option model.depth must be >= 1, got {self.depth}")
        if int(self.width) < 1:
            raise ConfigError(f"option model.width must be >= 1, got {self.width}")


def _check_choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"option {key}={value!r} is not valid; choose one of {', '.join(valid)}")
