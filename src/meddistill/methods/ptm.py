"""PTM: Yu, Liu, Chen, "Progressive trajectory matching for medical dataset distillation"
(paper 001; no public code, everything from the paper).

Progressive schedule (section 3.2: every round starts at theta_0, the end epoch grows from 1 to
T, the student takes more steps as it grows), L_match normalised by ||theta_t - theta_0||^2
(Eq. 3), overlap mitigation between the foundation and complement halves of each class
(Eq. 4, weight beta_2), retraining points (section 3.3). Unstated in the paper and so set here:
the kernel bandwidth (median same-class distance of the synthetic images, recomputed every
iteration), steps per expert epoch (10), linear growth
of T, k = 2 retraining points, beta_2 = 1e-2 (the overlap sum over all pairs is large next to a
match loss of order 1).
"""

EXPERTS = "gsam"
DEFAULTS = {
    "schedule": "progressive",
    "syn_steps": 20,
    "expert_epochs": 2,
    "progressive_steps_per_epoch": 10.0,
    "progressive_growth": "linear",
    "lr_img": 100.0,
    "lr_lr": 1e-5,
    "syn_lr_init": 0.01,
    "init": "real",
    "match_weight": 1.0,
    "overlap": True,
    "overlap_weight": 1e-2,
    "retraining_points": 2,
}
