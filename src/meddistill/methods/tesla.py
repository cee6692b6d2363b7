"""TESLA: Cui et al., "Scaling Up Dataset Distillation to ImageNet-1K with Constant Memory",
ICML 2023: MTT with soft labels from an expert's logits (fixed, not learned) and constant-memory
gradients. The reference drops cross-step terms; here the adjoint mode gives the exact MTT
gradient at constant memory instead."""

EXPERTS = "sgd"
DEFAULTS = {
    "schedule": "random",
    "syn_steps": 20,
    "expert_epochs": 3,
    "min_start": 0,
    "max_start": 25,
    "lr_img": 1000.0,
    "lr_lr": 1e-5,
    "syn_lr_init": 0.01,
    "gradient_mode": "adjoint",
    "soft_labels": True,
    "learn_labels": False,
}
