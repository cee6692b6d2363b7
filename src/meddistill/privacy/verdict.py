"""The audit's verdict: a traffic light and one paragraph a clinician can read, from fixed
rules on the memorisation and attack numbers (q is audit.quantile, 1 % by default; "the
attack" is the loss attack on networks trained on the synthetic set, LiRA on the same
networks when the audit ran shadows, and for a latent set the attack through its decoder
(privacy/decoder.py): R3 and A3 fire when any attack meets them; CI: 95 %
bootstrap interval; chance flags N * q of N unseen-like images, p is the binomial tail of the
count).

RED (do not share as it is), if any of
  R1  an image is a copy of a training image: equal to it once saved as 8-bit pixels (every
      pixel within one grey level);
  R2  pixel space holds more near copies than chance explains (at least one, p < 0.01);
  R3  the attack clearly finds members: AUC CI above 0.55, or TPR at 1 % FPR CI above 3 %
      (three times what guessing gives).
AMBER (look before sharing), if not red and any of
  A1  pixel space holds a near copy (within what chance gives);
  A2  feature space holds more near copies than chance explains (p < 0.01): images that
      resemble particular patients in what a trained network sees;
  A3  the attack does better than guessing: AUC CI above 0.5, or TPR at 1 % FPR CI above 1 %.
  A4  as a whole, the images sit nearer to training patients than unseen patients' images do
      (the ratio d_tr / d_ho below held-out images' own, one-sided Mann-Whitney p < 0.01, in
      pixel or feature space): e.g. training images with texture added by a short matching.
GREEN otherwise. The TPR parts of R3 and A3 apply only when there are at least 1 / FPR = 100
non-members (below that a 1 % FPR allows no false alarm at all, and one member that happens
to score above every non-member already reads as several per cent). Green is evidence, not a
guarantee: stronger attacks exist, and no formal guarantee (differential privacy) applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meddistill.privacy.attack import AttackStats
from meddistill.privacy.config import RULES_VERSION
from meddistill.privacy.memorisation import SpaceReport

EXCESS_P = 0.01  # R2, A2: near copies beyond chance at this binomial tail
AUC_RED, TPR_RED = 0.55, 0.03  # R3: lower CI bounds above these
AUC_AMBER, TPR_AMBER = 0.5, 0.01  # A3
FPR = 0.01  # the false-positive rate whose TPR the rules read


@dataclass
class Verdict:
    """green, amber or red; the paragraph; the rules that fired; the numbers they read."""

    light: str
    paragraph: str
    fired: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rules = {"excess_p": EXCESS_P, "auc_red": AUC_RED, "tpr_red": TPR_RED,
                 "auc_amber": AUC_AMBER, "tpr_amber": TPR_AMBER, "fpr": FPR}  # fmt: skip
        return {"light": self.light, "paragraph": self.paragraph, "rules_fired": self.fired,
                "numbers": self.numbers, "thresholds": rules,
                "rules_version": RULES_VERSION}  # fmt: skip


def _near(report: SpaceReport) -> str:
    n, q = report.flagged.size, report.quantile
    if not report.count:
        return (
            f"none of its {n} images is closer to a patient's training image than "
            f"{100 * (1 - q):g} % of unseen patients' images are"
        )
    return (
        f"{report.count} of its {n} images are closer to a patient's training image than "
        f"{100 * (1 - q):g} % of unseen patients' images are ({n * q:.2g} expected by chance)"
    )


ATTACK_NAMES = {
    "loss": "a membership test on models trained on it",
    "lira": "a shadow-model attack (LiRA) on models trained on it",
    "decoder": "a membership test through the decoder shared with it (the best code for each "
    "patient)",
}


def _attack(stats: AttackStats, name: str = "loss") -> str:
    lo, hi = stats.auc_ci
    return (
        f"{ATTACK_NAMES[name]} reaches AUC {stats.auc:.2f} (95 % interval "
        f"{lo:.2f}-{hi:.2f}; 0.50 is guessing) and picks out {100 * stats.tpr[FPR]:.1f} % of "
        f"training patients at a {100 * FPR:g} % false-alarm rate"
    )


def _lower_bounds(attack: AttackStats) -> tuple[float, float]:
    """The attack's AUC and TPR lower bounds; the TPR one 0 when the non-members are too few
    to resolve the FPR (AUC rules only)."""
    tpr_lo = attack.tpr_ci[FPR][0] if attack.nonmembers * FPR >= 1 else 0.0
    return attack.auc_ci[0], tpr_lo


def _attack_checks(attacks: dict[str, AttackStats]) -> dict[str, str]:
    """R3 or A3 of the first attack (loss, then LiRA) that meets it."""
    out: dict[str, str] = {}
    for name, attack in attacks.items():
        auc_lo, tpr_lo = _lower_bounds(attack)
        if "R3" not in out and (auc_lo > AUC_RED or tpr_lo > TPR_RED):
            out["R3"] = (
                _attack(attack, name) + ", so models trained on it reveal who was in the data"
            )
        if "A3" not in out and (auc_lo > AUC_AMBER or tpr_lo > TPR_AMBER):
            out["A3"] = _attack(attack, name) + ", better than guessing"
    if "R3" in out:
        out.pop("A3", None)
    return out


def _checks(
    pixel: SpaceReport, features: SpaceReport, attacks: dict[str, AttackStats]
) -> dict[str, str]:
    """{rule: its sentence} of every rule that fires."""
    copies = 0 if pixel.copies is None else int(pixel.copies.sum())
    out = {}
    if copies:
        out["R1"] = f"{copies} of its {pixel.flagged.size} images are copies of training images"
    if pixel.count and pixel.excess_p < EXCESS_P:
        out["R2"] = _near(pixel) + ", more than chance explains"
    found = _attack_checks(attacks)
    if "R3" in found:
        out["R3"] = found["R3"]
    if pixel.count and "R2" not in out:
        out["A1"] = _near(pixel)
    if features.count and features.excess_p < EXCESS_P:
        out["A2"] = "in what a trained network sees, " + _near(features)
    if "A3" in found:
        out["A3"] = found["A3"]
    shifted = [r for r in (pixel, features) if r.shift_p < EXCESS_P]
    if shifted:
        out["A4"] = _shift(shifted[0])
    return out


def _shift(report: SpaceReport) -> str:
    """A4's sentence (it fires only with a yardstick: heldout_ratio is set)."""
    where = "pixel space" if report.space == "pixel" else "what a trained network sees"
    return (
        f"as a whole its images sit nearer to training patients than unseen patients' images "
        f"do, in {where} (median distance ratio train / unseen {np.median(report.ratio):.2f}, "
        f"against {np.median(report.heldout_ratio):.2f} for unseen images; "
        f"p = {report.shift_p:.1g})"
    )


CAVEAT = (
    "These checks are evidence, not a guarantee: stronger attacks exist and no formal privacy "
    "guarantee (such as differential privacy) applies. pairs.png shows the synthetic images "
    "nearest to training images beside them."
)


HEADS = {
    "red": "Red: do not share this synthetic set as it is.",
    "amber": "Amber: no clear leak, but look before sharing.",
    "green": "Green: neither check found a sign that this set gives away patients.",
}


def verdict(
    pixel: SpaceReport,
    features: SpaceReport,
    attack: AttackStats,
    lira: AttackStats | None = None,
    *,
    decoder: AttackStats | None = None,
) -> Verdict:
    """The traffic light and paragraph of the rules in this module's docstring (`lira`: the
    LiRA attack's numbers, when the audit ran shadows; `decoder`: the attack through a latent
    set's decoder)."""
    extra = {"lira": lira, "decoder": decoder}
    attacks = {"loss": attack, **{k: v for k, v in extra.items() if v is not None}}
    fired = _checks(pixel, features, attacks)
    copies = 0 if pixel.copies is None else int(pixel.copies.sum())
    numbers = {
        "images": int(pixel.flagged.size), "copies_8bit": copies,
        "near_copies_pixel": pixel.count, "excess_p_pixel": pixel.excess_p,
        "near_copies_features": features.count, "excess_p_features": features.excess_p,
        "shift_p_pixel": pixel.shift_p, "shift_p_features": features.shift_p,
        "attack_auc": attack.auc, "attack_auc_ci": list(attack.auc_ci),
        "attack_tpr_at_1pct_fpr": attack.tpr[FPR], "attack_tpr_ci": list(attack.tpr_ci[FPR]),
        "nonmembers": attack.nonmembers,
    }  # fmt: skip
    for name in ("lira", "decoder"):
        if name in attacks:
            stats = attacks[name]
            numbers.update({
                f"{name}_auc": stats.auc, f"{name}_auc_ci": list(stats.auc_ci),
                f"{name}_tpr_at_1pct_fpr": stats.tpr[FPR], f"{name}_tpr_ci": list(stats.tpr_ci[FPR]),
            })  # fmt: skip
    red = [fired[k] for k in fired if k.startswith("R")]
    amber = [fired[k] for k in fired if k.startswith("A")]
    light = "red" if red else "amber" if amber else "green"
    tested = ", and ".join(_attack(stats, name) for name, stats in attacks.items())
    body = "; ".join(red or amber) or f"{_near(pixel)}, and {tested}"
    text = f"{HEADS[light]} {body[0].upper()}{body[1:]}. {CAVEAT}"
    return Verdict(light, text, list(fired), numbers)
