"""Networks (ConvNet 2D/3D, LeNet, AlexNet, VGG11, ResNet18) behind one `build_model`, and
flat-parameter helpers for functional (torch.func) training and trajectory matching."""

from meddistill.models.functional import (
    ParamLayout,
    count_params,
    flatten_grads,
    flatten_params,
    frozen_mask,
    frozen_param_names,
    functional_forward,
    load_flat_,
    param_names_and_slices,
    unflatten,
)
from meddistill.models.init import init_parameters_
from meddistill.models.registry import available_models, build_model, build_model_for
from meddistill.models.spec import ModelSpec

__all__ = [
    "ModelSpec",
    "ParamLayout",
    "available_models",
    "build_model",
    "build_model_for",
    "count_params",
    "flatten_grads",
    "flatten_params",
    "frozen_mask",
    "frozen_param_names",
    "functional_forward",
    "init_parameters_",
    "load_flat_",
    "param_names_and_slices",
    "unflatten",
]
