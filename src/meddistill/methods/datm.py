"""DATM: Guo et al., "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory
Matching", ICLR 2024: start bound growing from growing_start to max_start by growing_end,
images initialised from real samples the experts classify correctly, learnable soft labels
initialised from expert logits (soft cross-entropy on their softmax), and the update skipped
when the loss exceeds a threshold."""

EXPERTS = "gsam"
DEFAULTS = {
    "schedule": "growing",
    "syn_steps": 20,
    "expert_epochs": 2,
    "min_start": 0,
    "max_start": 20,
    "growing_start": 10,
    "growing_end": 200,
    "lr_img": 100.0,
    "lr_lr": 1e-5,
    "syn_lr_init": 0.01,
    "init": "real_correct",
    "soft_labels": True,
    "learn_labels": True,
    "lr_y": 2.0,
    "momentum_y": 0.9,
    "loss_skip_threshold": 1.0,
}
