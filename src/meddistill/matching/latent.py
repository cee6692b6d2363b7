"""The `latent` image parameterisation: synthetic images as codes of a small autoencoder.

The autoencoder (models.autoencoder) is trained once on the real train split (mean squared
reconstruction error, Adam, seeded) and kept like an expert buffer: a folder with
`autoencoder.safetensors` (weights) and `autoencoder.json` (dataset, settings, the
reconstruction error per epoch on train and on the held-out split), found again by its
settings under RUNS/autoencoders/. A synthetic set is then one code per image, learned through
the frozen decoder (matching back-propagates through it), plus the decoder itself, which must
be shared with the codes: the set's true size is codes + decoder + labels. The decoder was
trained on the private images, so it is as private as they are (README, privacy).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from meddistill import __version__, distributed
from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ArtifactError
from meddistill.locking import folder_lock
from meddistill.matching.config import LatentConfig
from meddistill.matching.parameterizations import BYTES_PER_VALUE, PER_IMAGE
from meddistill.models.autoencoder import ConvAutoencoder, build_autoencoder
from meddistill.runs import inside, slug
from meddistill.utils import atomic_path, derive_seed, json_text, make_generator, stable_hash

WEIGHTS, META, FORMAT = "autoencoder.safetensors", "autoencoder.json", "meddistill-autoencoder"


@dataclass
class Autoencoder:
    """A trained autoencoder and its record (autoencoder.json)."""

    model: ConvAutoencoder
    meta: dict[str, Any]
    path: Path | None = None

    def decoder_values(self) -> int:
        return sum(p.numel() for p in self.model.decoder.parameters())


def fit_autoencoder(
    dataset: MedicalDataset, cfg: LatentConfig, progress: bool = True
) -> Autoencoder:
    """Fit the autoencoder to the train split; record the reconstruction error per epoch."""
    t0 = time.perf_counter()
    shape = dataset.image_shape
    channels = cfg.channels or shape[0]
    gen = make_generator(derive_seed(cfg.seed, "autoencoder"))
    model = build_autoencoder(shape, channels, cfg.downsample, cfg.width, gen)
    device = dataset.train.images.device
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    images, held = dataset.train.images, _held_out(dataset)
    history: dict[str, list[float]] = {"train_mse": [], "held_out_mse": []}
    for _ in tqdm(range(cfg.epochs), desc="autoencoder", unit="epoch", disable=not progress):
        order = torch.randperm(images.shape[0], generator=gen).to(device)
        total = 0.0
        for idx in order.split(cfg.batch_size):
            batch = images.index_select(0, idx).float()
            loss = nn.functional.mse_loss(model(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        history["train_mse"].append(total / images.shape[0])
        history["held_out_mse"].append(reconstruction_mse(model, held))
    meta = {
        "format": FORMAT, "format_version": 1, "package_version": __version__,
        "dataset": {"name": dataset.name, "source_id": dataset.source_id,
                    "image_shape": list(shape), "normalization": dataset.normalization.to_dict()},
        "config": asdict(cfg), "code_shape": list(model.code_shape),
        "held_out_split": "val" if "val" in dataset.splits else "test",
        "history": history, "wall_s": round(time.perf_counter() - t0, 2),
    }  # fmt: skip
    opt.zero_grad(set_to_none=True)
    model.requires_grad_(False)  # frozen from here on: matching moves the codes only
    return Autoencoder(model.eval(), meta)


def _held_out(dataset: MedicalDataset) -> torch.Tensor:
    return dataset.splits["val" if "val" in dataset.splits else "test"].images


@torch.no_grad()
def reconstruction_mse(model: nn.Module, images: torch.Tensor, batch: int = 512) -> float:
    """Mean squared reconstruction error over `images` (normalised space)."""
    total = sum(
        float(nn.functional.mse_loss(model(x.float()), x.float(), reduction="sum"))
        for x in images.split(batch)
    )
    return total / images.numel()


def save_autoencoder(ae: Autoencoder, folder: Path) -> Path:
    """Weights, then the record that marks the folder complete (both atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in ae.model.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    with atomic_path(folder / META) as tmp:
        tmp.write_text(json_text(ae.meta, indent=2, sort_keys=True) + "\n")
    ae.path = folder
    return folder


def load_autoencoder(folder: str | Path, dataset: MedicalDataset) -> Autoencoder:
    """Read an autoencoder folder made for `dataset`; one clear error otherwise."""
    folder = Path(folder)
    remake = "delete the folder to train it again, or set match.latent.path to another"
    try:
        meta = json.loads((folder / META).read_text())
        state = load_file(str(folder / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as exc:
        raise ArtifactError(f"autoencoder at {folder} is unreadable ({exc}); {remake}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{folder / META} is not a meddistill autoencoder record; {remake}")
    made_for = meta.get("dataset", {})
    if made_for.get("source_id") != dataset.source_id:
        raise ArtifactError(
            f"autoencoder at {folder} was made for dataset {made_for.get('name')} "
            f"(source {made_for.get('source_id')}), not {dataset.name}; {remake}"
        )
    cfg = LatentConfig(**{**meta["config"], "path": None})
    model = build_autoencoder(dataset.image_shape, cfg.channels or dataset.image_shape[0],
                              cfg.downsample, cfg.width, make_generator(0))  # fmt: skip
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(
            f"autoencoder weights at {folder} do not fit ({exc}); {remake}"
        ) from exc
    model.requires_grad_(False)
    return Autoencoder(model.eval(), meta, folder)


def autoencoder_for(
    dataset: MedicalDataset,
    cfg: LatentConfig,
    runs_root: str | Path | None,
    log: Any,
    progress: bool,
) -> Autoencoder:
    """The given autoencoder (match.latent.path), or the one these settings made (reused), or
    a new one trained now and kept under RUNS/autoencoders/ (`runs_root` None: kept in memory
    only, as the API writes nothing unless asked)."""
    if cfg.path is not None:
        return load_autoencoder(cfg.path, dataset)
    if runs_root is None:
        return fit_autoencoder(dataset, cfg, progress)
    key = stable_hash(cfg.identity(dataset.source_id), 8)
    folder = inside(runs_root, Path(runs_root) / "autoencoders" / f"{slug(dataset.name)}-{key}",
                    "autoencoder folder")  # fmt: skip
    if not distributed.is_main():  # torchrun: rank 0 trains or finds it, the others load it
        distributed.barrier()
        return load_autoencoder(folder, dataset)
    ae = _kept_autoencoder(dataset, cfg, folder, log, progress)
    distributed.barrier()
    return ae


def _kept_autoencoder(
    dataset: MedicalDataset, cfg: LatentConfig, folder: Path, log: Any, progress: bool
) -> Autoencoder:
    """The autoencoder kept in `folder`, trained and saved there first if it is not."""
    with folder_lock(folder, "autoencoder folder"):
        if (folder / META).is_file():
            log(f"autoencoder: reusing {folder}")
            return load_autoencoder(folder, dataset)
        ae = fit_autoencoder(dataset, cfg, progress)
        save_autoencoder(ae, folder)
    mse = ae.meta["history"]["held_out_mse"][-1] if cfg.epochs else float("nan")
    log(f"autoencoder: trained in {ae.meta['wall_s']} s, held-out MSE {mse:.4g} -> {folder}")
    return ae


def latent_sizes(cfg: LatentConfig, image_shape: tuple[int, ...]) -> tuple[int, int]:
    """(values per code, values of the decoder) of these settings, without training."""
    with torch.device("meta"):
        model = ConvAutoencoder(image_shape, cfg.channels or image_shape[0], cfg.downsample,
                                cfg.width)  # fmt: skip
    return math.prod(model.code_shape), sum(p.numel() for p in model.decoder.parameters())


class LatentParam:
    """Images as decoder(codes): `encode` the engine's initial images once with the encoder,
    learn the codes through the frozen decoder."""

    def __init__(self, ae: Autoencoder, images_per_class: int) -> None:
        self.ae, self.images_per_class = ae, int(images_per_class)

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        model = self.ae.model.to(images.device)
        with torch.no_grad():
            return {PER_IMAGE: model.encoder(images.float()).detach().clone()}

    def render(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        codes = tensors[PER_IMAGE]
        return self.ae.model.to(codes.device).decoder(codes)

    def learning_rates(self, lr_img: float) -> dict[str, float]:
        return {PER_IMAGE: float(lr_img)}

    def values_per_image(self) -> int:
        return math.prod(self.ae.model.code_shape)

    def describe(self) -> dict[str, Any]:
        """Metadata for the set: the decoder to share with the codes, and their storage."""
        return {
            "name": "latent",
            "autoencoder": str(self.ae.path) if self.ae.path else None,
            "autoencoder_settings": self.ae.meta["config"],
            "code_shape": list(self.ae.model.code_shape),
            "images_per_class": self.images_per_class,
            "values_per_image": self.values_per_image(),
            "decoder_values": self.ae.decoder_values(),
            "decoder_bytes": self.ae.decoder_values() * BYTES_PER_VALUE,
            "pixel_values_per_image": math.prod(self.ae.model.image_shape),
        }
