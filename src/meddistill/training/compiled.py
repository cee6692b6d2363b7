"""The training step (forward, loss, backward) of `train_network`, optionally torch.compile'd.

Compiling fuses the elementwise work of instance norm, ReLU and pooling around the
convolutions: on the 2-core CPU of this project a ConvNet-3 step runs about 1.6x faster at
batch 80-256 and about 1.2x at batch 8 (benchmarks/evaluation.py and experts.py measure it),
after a one-off compile of 20-40 s per input shape (about 5 s when the compile cache already
holds it). Compiled kernels round differently from eager ones, so a compiled run agrees with the
eager run to float tolerance, not bit for bit; the option is scheduling, not protocol.

Where compiling fails (no C++ compiler, an unsupported op, a torch bug) the step says so once in
the log and runs eagerly from then on; the step that failed is redone eagerly, so nothing is lost.
The compile cache lives in torch's own cache folder (TORCHINDUCTOR_CACHE_DIR when set), so it is
kept between runs and shared by the worker processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from meddistill.errors import MeddistillError
from meddistill.training.metrics import classification_loss

log = logging.getLogger(__name__)

# auto compiles on CPU from this much work (images x epochs over the trainings of one call),
# where the measured gain repays a cold compile (see compile_on).
COMPILE_AUTO_WORK = 100_000

# Said once per process: the first failure to compile and the fallback it caused.
_fallback_said = False


def valid_compile(setting: Any) -> bool:
    """A `compile` option: true, false or auto."""
    return isinstance(setting, bool) or setting == "auto"


def compile_on(setting: bool | str, device: torch.device, work: float, threshold: float) -> bool:
    """Whether to compile: true/false as set; auto compiles on CUDA, and on CPU when one
    training's `work` (images x epochs) is at least `threshold`, where the measured speed-up
    repays a cold compile."""
    if setting != "auto":
        return bool(setting)
    return device.type == "cuda" or work >= threshold


def _say_fallback(exc: BaseException) -> None:
    global _fallback_said
    if not _fallback_said:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        log.warning(
            "torch.compile failed (%s: %s); training continues eagerly (same results to float "
            "tolerance, slower). Set compile: false to skip the attempt.",
            type(exc).__name__,
            first_line[:200],
        )
        _fallback_said = True


class TrainStep:
    """forward + loss + backward of one batch; returns (loss, logits), both detached.

    With `compile=True` the model's forward (and through AOTAutograd its backward) runs
    compiled; any failure other than meddistill's own errors switches this step to eager for
    good, and the failed batch is recomputed eagerly after clearing its partial gradients.
    """

    def __init__(self, model: nn.Module, *, compile: bool = False) -> None:
        self.model = model
        self._forward: Callable[[torch.Tensor], torch.Tensor] = model
        self.compiled = False
        if compile:
            try:
                self._forward = torch.compile(model, dynamic=False)
                self.compiled = True
            except Exception as exc:  # noqa: BLE001 (torch raises many kinds here)
                _say_fallback(exc)

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self._forward(x)
        loss = classification_loss(logits, y)
        loss.backward()
        return loss.detach(), logits.detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.compiled:
            return self._run(x, y)
        try:
            return self._run(x, y)
        except MeddistillError:
            raise
        except Exception as exc:  # noqa: BLE001 (compile errors come in many classes)
            _say_fallback(exc)
            self._forward, self.compiled = self.model, False
            for param in self.model.parameters():
                param.grad = None
            return self._run(x, y)
