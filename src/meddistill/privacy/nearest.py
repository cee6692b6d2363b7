"""Nearest neighbours by L2 distance between image (or feature) sets, in chunks.

Candidates are found with one matrix product per chunk (|q|^2 + |r|^2 - 2 q.r, in float32 so
a large train split is never copied), then the few best are measured again directly in
float64: the distance reported is the true one, so an exact copy reads 0, not a rounding
residue of the product.
"""

from __future__ import annotations

import torch

CANDIDATES = 8  # best candidates per query re-measured exactly
CHUNK = 256  # queries per matrix product (fewer for large images)
EXACT_VALUES = 1 << 25  # float64 values of one chunk's re-measured candidates (256 MiB)


def nearest(
    queries: torch.Tensor, refs: torch.Tensor, chunk: int = CHUNK, skip_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of `queries` [N, ...] its nearest row of `refs` [M, ...]: (float64
    distances [N], int64 indices [N]) on the CPU; ties go to the lower index. `skip_self`:
    queries are refs, and row i's own copy in refs does not count (its nearest other row)."""
    q_all = queries.detach().flatten(1).float()
    r = refs.detach().flatten(1).float().to(q_all.device)
    r_sq = r.pow(2).sum(dim=1)
    k = min(CANDIDATES, r.shape[0])
    chunk = max(1, min(chunk, EXACT_VALUES // (k * max(1, r.shape[1]))))
    dists, index = [], []
    for start in range(0, q_all.shape[0], chunk):
        q = q_all[start : start + chunk]
        approx = q.pow(2).sum(dim=1, keepdim=True) + r_sq - 2.0 * (q @ r.T)
        if skip_self:
            rows = torch.arange(q.shape[0], device=q.device)
            approx[rows, rows + start] = float("inf")
        cand = approx.topk(k, dim=1, largest=False).indices.sort(dim=1).values  # [n, k]
        exact = (q.double().unsqueeze(1) - r[cand].double()).pow(2).sum(dim=2).sqrt()
        if skip_self:
            own = cand == (torch.arange(q.shape[0], device=q.device)[:, None] + start)
            exact = exact.masked_fill(own, float("inf"))
        best = exact.argmin(dim=1)  # first minimum: the lowest index among exact ties
        dists.append(exact.gather(1, best[:, None]).squeeze(1).cpu())
        index.append(cand.gather(1, best[:, None]).squeeze(1).cpu())
    return torch.cat(dists), torch.cat(index)
