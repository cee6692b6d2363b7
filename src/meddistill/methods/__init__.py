"""Methods: one object per method in ONE registry (meddistill.methods.registry).

Each method file names its paper, declares its typed config (only its paper's knobs, with the
published defaults) and assembles engine parts: trajectory methods (hoptm, ptm, mtt, ftd, datm,
tesla, att, smdd, seqmatch, haba) build `TrajectoryParts` for the matching engine; objective
methods (dc, dsa, dm, idm, cafe) supply an `Objective` for the objective loop; coresets (random,
herding, kcenter) select real images. See meddistill.methods.base for the protocol.
"""
