"""Gradient difference (GradDiff): GA on the forget set plus an NLL term on the retain set.

Liu et al. 2022, "Continual Learning and Private Unlearning", https://arxiv.org/abs/2203.12817
(as the TOFU baseline "Grad. Diff.", https://arxiv.org/abs/2401.06121).

The total loss is L = gamma * L_GA(D_f) + lambda * NLL(D_r) with lambda = 1 (the config's
``objective.lambda``). Only the forget term is a function of the forget batch, so ``graddiff`` below IS
``ga``; the retain term is added by the engine, which reads ``RETAIN_LOSS`` (through
``OBJECTIVES["graddiff"].retain_loss``) and computes ``regularizers.nll`` on the retain batch.
"""

from __future__ import annotations

import torch

from .ga import ga
from .types import LossTerms

# The engine adds objective.lambda * regularizers.nll(retain batch) to this objective by default.
RETAIN_LOSS = "nll"


def graddiff(logp: torch.Tensor, mask: torch.Tensor, ref_logp: torch.Tensor | None = None) -> LossTerms:
    """Forget term of GradDiff (minimised), identical to ``ga``: L_forget = mean_tokens log p_i.

    Shapes, masking and the worked example are those of ``ga``::

        logp = [[ln 1/2, ln 1/4, <masked>]] -> loss = -1.5 ln 2 = -1.039721

    The retain NLL term (lambda = 1) is NOT included here: see the module docstring.
    """
    return ga(logp, mask, ref_logp)
