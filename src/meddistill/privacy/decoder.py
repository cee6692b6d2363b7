"""What a latent set's decoder reveals: a membership attack through the decoder alone.

Why: a latent set is shared as codes plus the decoder of an autoencoder trained on the private
train images. The decoded images may be harmless while the decoder itself reproduces training
patients better than unseen ones. The attacker here holds what is shared, the decoder (not the
encoder): for each target image it searches the code that reconstructs it best (Adam from a
zero code, the same steps for every target, no randomness) and scores it by the remaining
squared error; training patients reconstructed better than unseen ones is membership leakage.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meddistill.data.dataset import MedicalDataset
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError
from meddistill.matching.latent import load_autoencoder
from meddistill.privacy.attack import AttackStats, attack_stats
from meddistill.privacy.membership import Scored
from meddistill.utils import make_generator

STEPS = 500  # code-search steps per target (an overfit decoder needs ~500 to show)
LR = 0.05  # Adam step on the code


def latent_decoder_path(syn: SyntheticSet) -> Path | None:
    """The autoencoder folder a latent set was made with (None for other sets)."""
    param = syn.meta.get("parameterization") or {}
    if param.get("name") != "latent":
        return None
    path = Path(str(param.get("autoencoder") or ""))
    if not (path / "autoencoder.json").is_file():
        raise ConfigError(
            f"the set is latent, but its autoencoder {path} is not there; its decoder is shared "
            "with the set and must be audited too: run the audit from the folder the set was "
            "made in, or put the autoencoder back at that path"
        )
    return path


def reconstruction_errors(
    decoder: nn.Module,
    images: torch.Tensor,
    code_shape: tuple[int, ...],
    *,
    steps: int = STEPS,
    lr: float = LR,
    batch: int = 500,
) -> np.ndarray:
    """Per image: the mean squared error of the best code Adam finds for it in `steps` steps."""
    frozen = copy.deepcopy(decoder).requires_grad_(False).eval()
    out = []
    for x in images.split(batch):
        x = x.float()
        code = torch.zeros((x.shape[0], *code_shape), device=x.device, requires_grad=True)
        opt = torch.optim.Adam([code], lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            error = (frozen(code) - x).pow(2).flatten(1).mean(1)
            error.sum().backward()
            opt.step()
        with torch.no_grad():
            out.append((frozen(code) - x).pow(2).flatten(1).mean(1).cpu())
    return torch.cat(out).double().numpy()


def decoder_attack(
    decoder: nn.Module,
    code_shape: tuple[int, ...],
    members: Scored,
    others: Scored,
    *,
    bootstrap: int,
    seed: int,
    steps: int = STEPS,
) -> AttackStats:
    """Members should be reconstructed better: the score is minus the reconstruction error."""
    scores = [
        -reconstruction_errors(decoder, s.images, code_shape, steps=steps)
        for s in (members, others)
    ]
    return attack_stats(*scores, generator=make_generator(seed), bootstrap=bootstrap)


def decoder_of(path: Path, dataset: MedicalDataset) -> tuple[nn.Module, tuple[int, ...], Any]:
    """(decoder, code shape, the autoencoder's record) of a saved autoencoder."""
    ae = load_autoencoder(path, dataset)
    return ae.model.decoder, tuple(ae.meta["code_shape"]), ae.meta
