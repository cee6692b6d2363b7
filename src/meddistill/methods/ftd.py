"""FTD: Du et al., "Minimizing the Accumulated Trajectory Error to Improve Dataset
Distillation", CVPR 2023: flat (GSAM) experts plus an EMA of the synthetic images (decay
0.9995), and the EMA is what gets evaluated and shared."""

EXPERTS = "gsam"
DEFAULTS = {
    "schedule": "random",
    "syn_steps": 20,
    "expert_epochs": 3,
    "min_start": 0,
    "max_start": 25,
    "lr_img": 1000.0,
    "lr_lr": 1e-5,
    "syn_lr_init": 0.01,
    "ema_decay": 0.9995,
}
