"""HoP-TM: Dong, Bian et al., "High-Order Progressive Trajectory Matching for Medical Image
Dataset Distillation" (paper 002; code Bian-jh/HoP-TM, built on DATM's code).

MTT plus the shape-wise potential (Eq. 3-4; reference-code form with all three vertex angles by
default, `shape_form: paper` for the midpoint angle) and easy-to-complex matching (Eq. 5-7;
cumulative mask as in the code by default, `e2c_cumulative: false` for the paper's per-iteration
mask). Defaults: the published PathMNIST IPC 1/5/10 row (kappa_base 5e-9, mu 1.5, P 500,
lambda 0.5, 80 steps, 2 expert epochs, start 0-4, lr_img 10, alpha 0.01, lr_lr 1e-7,
batch_syn 10) on flat (GSAM) experts.
"""

EXPERTS = "gsam"
DEFAULTS = {
    "schedule": "random",
    "syn_steps": 80,
    "expert_epochs": 2,
    "min_start": 0,
    "max_start": 4,
    "lr_img": 10.0,
    "lr_lr": 1e-7,
    "syn_lr_init": 0.01,
    "batch_syn": 10,
    "init": "real",
    "easy_to_complex": True,
    "e2c_cumulative": True,
    "kappa_mode": "absolute",
    "kappa_base": 5e-9,
    "kappa_mu": 1.5,
    "kappa_period": 500,
    "shape_potential": True,
    "shape_form": "code",
    "shape_lambda": 0.5,
}
