"""ATT: Liu et al., "Dataset Distillation by Automatic Training Trajectories", ECCV 2024: the
L1 distance to the target is computed for every student step (no gradient) and the loss matches
at the closest step instead of the last; an EMA of the images is kept."""

EXPERTS = "sgd"
DEFAULTS = {
    "schedule": "random",
    "syn_steps": 20,
    "expert_epochs": 2,
    "min_start": 0,
    "max_start": 20,
    "lr_img": 1000.0,
    "lr_lr": 1e-5,
    "syn_lr_init": 0.01,
    "argmin_step": True,
    "ema_decay": 0.999,
}
