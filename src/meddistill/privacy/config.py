"""What an audit measures and how hard it looks; the networks it trains follow the job's
`eval` (the K attack networks, the evaluation protocol) and `full_train` sections."""

from __future__ import annotations

from dataclasses import dataclass, field

from meddistill.utils import Options

REFERENCES = ("full", "random")


@dataclass
class AuditConfig:
    """The memorisation check and the membership attack (see meddistill.privacy).

    `references`: the same attack on networks trained on the full train split ("full", the
    features network(s) of the memorisation check) and on a random real subset as large as
    the set ("random"): what the numbers of the synthetic set are read against.
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
