"""What an audit measures and how hard it looks; the networks it trains follow the job's
`eval` (the K attack networks, the evaluation protocol) and `full_train` sections."""

from __future__ import annotations

from dataclasses import dataclass, field

from meddistill.utils import Options

REFERENCES = ("full", "random")


# The verdict's rules (privacy/verdict.py): 2 added A4, 3 the attack through a latent set's
# decoder. Part of a grid audit's id, so audits recorded under other rules are made again
# rather than read back.
RULES_VERSION = 3


@dataclass
class AuditConfig:
    """The memorisation check and the membership attacks, loss and LiRA (meddistill.privacy).

    `references`: the same attack on networks trained on the full train split ("full", the
    features network(s) of the memorisation check) and on a random real subset as large as
    the set ("random"): what the numbers of the synthetic set are read against.

    `shadows` > 0 adds LiRA (privacy/shadows.py): that many shadow pipelines, each an expert
    buffer, a distillation and one network on a random half of the data, made as the set was
    (its run folder's config.yaml) with `shadow_overrides` (key=value texts on that config,
    e.g. [experts.num_experts=2, match.iterations=200]: cheaper shadows, recorded).
    `lira_global_variance`: one variance for all images (true), per image (false), or auto
    (global below 64 shadows, as the paper advises).
    """

    quantile: float = 0.01  # near copy: d_tr below this quantile of held-out-to-train distances
    pairs: int = 8  # closest (synthetic, train) pairs drawn in pairs.png (0: none)
    members: int = 1000  # train images the attack scores (all if fewer), and as many held-out
    bootstrap: int = 1000  # resamples behind each 95 % interval of the attack
    full_nets: int = 1  # networks trained on the full train split (features, full reference)
    references: list[str] = field(
        default_factory=lambda: list(REFERENCES),
        metadata={"help": "the attack on real-data references too: full, random (or [])"},
    )
    shadows: int = 0  # LiRA shadow pipelines (0: no LiRA; each costs a buffer + distillation)
    shadow_overrides: list[str] = field(
        default_factory=list,
        metadata={"help": "key=value on the set's config for the shadows (cheaper: recorded)"},
    )
    lira_global_variance: bool | str = "auto"  # one variance for all images; auto: < 64 shadows

    def __post_init__(self) -> None:
        check = Options("audit", self)
        check.fraction("quantile", low_open=True)
        check.counts("pairs", minimum=0, zero="0: no pairs.png")
        check.counts("members", "bootstrap", "full_nets")
        refs = self.references
        if not (isinstance(refs, list) and set(refs) <= set(REFERENCES)):
            check.fail("references", f"a list of {', '.join(REFERENCES)} (or empty)")
        if len(set(refs)) != len(refs):
            check.fail("references", "a list without repeats")
        check.counts("shadows", minimum=0, zero="0: no LiRA")
        if self.shadows == 1:
            check.fail(
                "shadows", "0 (no LiRA) or at least 2 (each image IN one shadow, OUT another)"
            )
        items = self.shadow_overrides
        if not (isinstance(items, list) and all(isinstance(i, str) and "=" in i for i in items)):
            check.fail("shadow_overrides", "a list of key=value texts, e.g. [match.iterations=100]")
        if not (isinstance(self.lira_global_variance, bool) or self.lira_global_variance == "auto"):
            check.fail("lira_global_variance", "true, false or auto (global below 64 shadows)")
