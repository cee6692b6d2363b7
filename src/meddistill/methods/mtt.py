"""MTT: Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022.

Random start in [min_start, max_start), N student steps, normalised parameter loss (Eq. 2 of
HoP-TM), learnable step size. Defaults are the reference script's generic defaults.
"""

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
    "init": "real",
}
