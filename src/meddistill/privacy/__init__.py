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
from meddistill.privacy.report import AuditReport
from meddistill.privacy.verdict import Verdict, verdict

__all__ = [
    "AttackStats",
    "AuditConfig",
    "AuditNetworks",
    "AuditReport",
    "Verdict",
    "attack_stats",
    "audit_set",
    "save_audit",
    "verdict",
]
