"""The latent image parameterisation: the autoencoder (training, cache, refusals) and the
engine learning codes through its frozen decoder."""

import json

import pytest
import torch
from test_engine import _cfg, _distiller

from meddistill.app.defaults import ipc_for_storage
from meddistill.errors import ArtifactError, ConfigError
from meddistill.matching.config import LatentConfig
from meddistill.matching.latent import (
    LatentParam,
    autoencoder_for,
    fit_autoencoder,
    latent_sizes,
    load_autoencoder,
    reconstruction_mse,
)
from meddistill.matching.loop import CHECKPOINT
from meddistill.models.autoencoder import build_autoencoder
from meddistill.utils import derive_seed, make_generator

SMALL = LatentConfig(channels=2, downsample=2, width=4, epochs=3, lr=3e-3, batch_size=16)


@pytest.fixture(scope="module")
def toy_ae(toy):
    return fit_autoencoder(toy, SMALL, progress=False)


def test_training_lowers_the_reconstruction_error(toy, toy_ae):
    history = toy_ae.meta["history"]
    assert len(history["train_mse"]) == 3 and toy_ae.meta["held_out_split"] == "test"
    # the same seeded start, untrained: training lowered the held-out error every epoch
    start = build_autoencoder((1, 8, 8), 2, 2, 4, make_generator(derive_seed(0, "autoencoder")))
    held = toy.splits["test"].images
    assert reconstruction_mse(start, held) > history["held_out_mse"][0]
    assert history["held_out_mse"] == sorted(history["held_out_mse"], reverse=True)
    assert history["held_out_mse"][-1] == pytest.approx(reconstruction_mse(toy_ae.model, held))
    again = fit_autoencoder(toy, SMALL, progress=False)  # seeded: the same weights
    for a, b in zip(toy_ae.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sizes_by_hand():
    # 8 x 8 gray, 2 code channels at 4 x 4: 32 values; decoder conv 3x3 2->4 (72 + 4),
    # one upsampling conv 3x3 4->4 (144 + 4), conv 3x3 4->1 (36 + 1): 261 values
    assert latent_sizes(SMALL, (1, 8, 8)) == (32, 261)
    with pytest.raises(ConfigError, match="does not divide"):
        latent_sizes(LatentConfig(downsample=4), (1, 6, 6))
    with pytest.raises(ConfigError, match="power of 2"):
        latent_sizes(LatentConfig(downsample=3), (1, 6, 6))
    with pytest.raises(ConfigError, match="match.latent.width"):
        LatentConfig(width=0)


def test_budget_counts_the_decoder(toy):
    cfg = _cfg("hoptm", parameterization="latent", latent=vars(SMALL) | {}, budget_ipc=10)
    # 3 classes x 10 x 64 pixel values = 1920; minus the decoder's 261 = 1659; / (3 x 32) = 17
    fitted, note = ipc_for_storage(cfg, (1, 8, 8), num_classes=3)
    assert fitted.ipc == 17 and "plus the decoder's 261" in note


def test_cache_reuses_and_refuses(toy, toy_ae, tmp_path):
    logs = []
    first = autoencoder_for(toy, SMALL, tmp_path, logs.append, progress=False)
    again = autoencoder_for(toy, SMALL, tmp_path, logs.append, progress=False)
    assert any("reusing" in m for m in logs) and first.path == again.path
    assert torch.equal(next(first.model.parameters()), next(again.model.parameters()))
    meta = json.loads((first.path / "autoencoder.json").read_text())
    meta["dataset"]["source_id"] = "another"
    (first.path / "autoencoder.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="was made for dataset"):
        load_autoencoder(first.path, toy)
    (first.path / "autoencoder.safetensors").write_bytes(b"not a file")
    with pytest.raises(ArtifactError, match="unreadable"):
        load_autoencoder(first.path, toy)


def test_render_gradient_reaches_codes_only(toy_ae):
    param = LatentParam(toy_ae, images_per_class=1)
    codes = torch.randn(2, 2, 4, 4, requires_grad=True)
    images = param.render({"codes": codes})
    assert images.shape == (2, 1, 8, 8)
    (grad,) = torch.autograd.grad(images.square().sum(), codes)
    assert grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in toy_ae.model.parameters())
    # finite differences on one code value (float64 copy of the decoder)
    dec = toy_ae.model.decoder.double()
    try:
        c = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: dec(x).sin().sum(), (c,))
    finally:
        toy_ae.model.float()


@pytest.mark.parametrize("method", ["hoptm", "ptm"])
def test_engine_learns_latent_codes_and_resumes(method, toy, toy_buffer, toy_ae, tmp_path):
    cfg = _cfg(method, iterations=4, checkpoint_every=2, parameterization="latent")
    full = _distiller(cfg, toy, toy_buffer, tmp_path / "full", autoencoder=toy_ae)
    init = full.initial_state()
    assert init.params["codes"].shape == (6, 2, 4, 4)
    syn = full.run_all()
    assert not torch.equal(syn.images, init.images)
    assert torch.allclose(toy_ae.model.decoder(syn.codes["codes"]), syn.images, atol=1e-5)
    meta = syn.meta["parameterization"]
    assert meta["name"] == "latent" and meta["decoder_values"] == 261
    assert syn.stored_bytes() == 6 * 32 * 4 + 6 * 8 + 261 * 4  # codes, labels, decoder
    part = _distiller(cfg, toy, toy_buffer, tmp_path / "part", autoencoder=toy_ae)
    state, gen = part.start()
    for _ in range(2):
        part.advance(state, gen)
    part.save_state(state, gen, tmp_path / "part" / CHECKPOINT)
    resumed = _distiller(cfg, toy, toy_buffer, tmp_path / "part", autoencoder=toy_ae)
    assert torch.equal(resumed.run_all().images, syn.images)


def test_latent_without_an_autoencoder_says_how(toy, toy_buffer, tmp_path):
    with pytest.raises(ConfigError, match="needs its autoencoder"):
        _distiller(_cfg(parameterization="latent"), toy, toy_buffer, tmp_path)


def test_objective_method_learns_codes_and_api_trains_the_autoencoder(toy, toy_ae):
    import meddistill as md

    syn = md.distill(toy, "dm", ipc=2, iterations=3, parameterization="latent",
                     latent={"channels": 2, "width": 4, "epochs": 1}, progress=False,
                     lr_img=1.0, batch_real=8)  # fmt: skip
    assert syn.codes["codes"].shape == (6, 2, 4, 4)
    assert syn.meta["parameterization"]["autoencoder"] is None  # trained in memory
    given = md.distill(toy, "dm", ipc=2, iterations=3, parameterization="latent",
                       autoencoder=toy_ae, progress=False, lr_img=1.0, batch_real=8)  # fmt: skip
    assert torch.allclose(toy_ae.model.decoder(given.codes["codes"]), given.images, atol=1e-5)
    assert md.train_autoencoder(toy, progress=False, epochs=1, width=4).meta["config"]["width"] == 4
