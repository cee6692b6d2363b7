"""Privacy audit of a synthetic set: would sharing it give away patients?

Sets are initialised from real training images by default, so a set can hold near copies of
them. Two checks, one verdict:

- memorisation (memorisation.py, nearest.py): each synthetic image's nearest train and
  held-out images (val, else test) by L2 distance, in pixel space and in the penultimate
  features of a network trained on the full train split; near copies are flagged against the
  held-out images' own distances to train; pairs.py draws the closest pairs.
- membership (membership.py, attack.py): the loss-threshold attack on networks trained on the
  set, scored on train members against held-out non-members; AUC and TPR at 1 % and 0.1 %
  FPR with bootstrap intervals; the same on a random real subset of the same size and on the
  full train split, for reference.
- LiRA (lira.py, shadows.py; when audit.shadows > 0): shadow pipelines run on random halves
  of the data, each image's logit-scaled confidence under them fitted by an IN and an OUT
  Gaussian, and the set's networks scored by the likelihood ratio (Carlini et al. 2022); the
  pipeline is pluggable (ShadowPipeline), the audit's own is built in app/shadows.py.
- verdict (verdict.py): green, amber or red by the rules stated there, with a paragraph.

audit.py runs them in order (`audit_set`) and writes audit.json and the pairs PNGs
(`save_audit`); config.py holds the options (`audit:`), report.py the result.

A formal guarantee instead of an audit: differential privacy lives below this package, where
the experts train (training/dp.py: options and Opacus accounting; training/dp_loop.py: DP-SGD;
experts/private.py: a buffer's guarantee), and app/private.py decides which distillations
inherit it and refuses the settings that would read private images.
"""

from meddistill.privacy.attack import AttackStats, attack_stats
from meddistill.privacy.audit import AuditNetworks, audit_set, save_audit
from meddistill.privacy.config import AuditConfig
from meddistill.privacy.lira import lira_scores, logit_confidence
from meddistill.privacy.report import AuditReport
from meddistill.privacy.shadows import ShadowPipeline
from meddistill.privacy.verdict import Verdict, verdict

__all__ = [
    "AttackStats",
    "AuditConfig",
    "AuditNetworks",
    "AuditReport",
    "ShadowPipeline",
    "Verdict",
    "attack_stats",
    "audit_set",
    "lira_scores",
    "logit_confidence",
    "save_audit",
    "verdict",
]
