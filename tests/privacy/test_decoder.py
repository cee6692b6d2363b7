"""The attack through a latent set's decoder: known answers, and where the audit finds it."""

from __future__ import annotations

import pytest
import torch
from test_memorisation import attack, draws
from torch import nn
from toydata import noise_dataset

from meddistill.data.dataset import Normalization
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError
from meddistill.matching.config import LatentConfig
from meddistill.matching.latent import fit_autoencoder, save_autoencoder
from meddistill.privacy.decoder import decoder_attack, latent_decoder_path, reconstruction_errors
from meddistill.privacy.membership import Scored
from meddistill.privacy.memorisation import memorisation
from meddistill.privacy.verdict import verdict


def test_best_code_of_a_block_decoder_leaves_the_within_block_variance():
    # decoder: each code value fills a 2 x 2 block, so the best code is the block mean and
    # what is left is the mean squared deviation from it inside the blocks
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    blocks = x.unfold(2, 2, 2).unfold(3, 2, 2)  # [3, 1, 4, 4, 2, 2]
    want = (blocks - blocks.mean(dim=(-1, -2), keepdim=True)).pow(2).mean(dim=(1, 2, 3, 4, 5))
    got = reconstruction_errors(nn.Upsample(scale_factor=2), x, (1, 4, 4))
    assert got == pytest.approx(want.double().numpy(), abs=5e-3)


def _scored(split) -> Scored:
    return Scored(split.images, split.labels, torch.arange(len(split.labels)))


def _decoder(seed: int, epochs: int = 300):
    data = noise_dataset(24, 24, seed=seed)
    cfg = LatentConfig(epochs=epochs, width=32, batch_size=8, lr=3e-3)
    ae = fit_autoencoder(data, cfg, progress=False)
    return data, ae


def test_a_decoder_that_memorised_its_patients_gives_them_away():
    data, ae = _decoder(seed=0)
    code = tuple(ae.meta["code_shape"])
    leak = decoder_attack(ae.model.decoder, code, _scored(data.train), _scored(data.val),
                          bootstrap=200, seed=0)  # fmt: skip
    assert leak.auc_ci[0] > 0.8
    other = noise_dataset(24, 24, seed=5)  # neither side was in this decoder's training data
    none = decoder_attack(ae.model.decoder, code, _scored(other.train), _scored(other.val),
                          bootstrap=200, seed=0)  # fmt: skip
    assert none.auc_ci[0] < 0.5 < none.auc_ci[1]


def _set(meta: dict) -> SyntheticSet:
    return SyntheticSet(
        images=torch.zeros(3, 1, 8, 8), labels=torch.arange(3), normalization=Normalization(
            (0.0,), (1.0,)), class_names=["a", "b", "c"], dataset="noise", source_id="s",
        syn_lr=0.01, meta=meta,
    )  # fmt: skip


def test_the_audit_finds_a_latent_sets_decoder_or_says_where_it_went(tmp_path):
    assert latent_decoder_path(_set({})) is None  # pixels: no decoder
    _, ae = _decoder(seed=0, epochs=1)
    save_autoencoder(ae, tmp_path / "ae")
    latent = {"parameterization": {"name": "latent", "autoencoder": str(tmp_path / "ae")}}
    assert latent_decoder_path(_set(latent)) == tmp_path / "ae"
    gone = {"parameterization": {"name": "latent", "autoencoder": str(tmp_path / "gone")}}
    with pytest.raises(ConfigError, match="its autoencoder .*gone is not there"):
        latent_decoder_path(_set(gone))


def test_the_verdict_reads_the_decoder_attack():
    train, heldout = draws(200, 1), draws(100, 2)
    fresh = memorisation(draws(10, 3), train, heldout, quantile=0.01, space="pixel")
    chance = attack(0.5, (0.47, 0.53))
    assert verdict(fresh, fresh, chance, decoder=chance).light == "green"
    red = verdict(fresh, fresh, chance, decoder=attack(0.9, (0.85, 0.95)))
    assert red.light == "red" and red.fired == ["R3"]
    assert "through the decoder shared with it" in red.paragraph
    assert red.to_dict()["numbers"]["decoder_auc"] == 0.9
