"""IdkNLL: fine-tune the forget questions toward a refusal ("I don't know") instead of their answers.

TOFU (Maini et al. 2024, https://arxiv.org/abs/2401.06121), its "I don't know" baseline; open-unlearning's
IdkNLL. The forget answers are never pushed down: each forget question is paired with a refusal sentence
(``dsunlearn/data/refusals.py``) and the model is trained on that answer, so this objective is a plain NLL
whose batch is the refusal answers. The engine passes the refusal encodings (the spec's ``answers`` is
"alternate"); the G-effect's forget risk stays the NLL of the real forget answers.
"""

from __future__ import annotations

import torch

from ._common import check_inputs, masked, token_terms
from .types import LossTerms


def idk_nll(logp: torch.Tensor, mask: torch.Tensor, ref_logp: torch.Tensor | None = None) -> LossTerms:
    """IdkNLL forget loss (minimised): L = mean_tokens NLL_i = -mean_tokens log p_i over the REFUSAL answers.

    d loss / d log p_i = -1 / count on every refusal token: gradient descent on the refusal's likelihood
    (weight 1 on every token, the sign is the opposite of GA's).

    Args:
        logp: [B, T] per-token log-probs of the refusal answers (``token_logprobs``), 0 off the mask.
        mask: [B, T] bool, True on refusal-answer tokens (its EOS included).
        ref_logp: unused (no reference model); accepted for the uniform signature.

    Returns:
        Token-level ``LossTerms``: ``per_item = -log p_i`` on the mask, ``weights`` = 1 on the mask.

    Example::

        logp = [[ln 1/2, ln 1/4, <masked>]]   ("I | don't | <pad>": two refusal tokens)
        loss_sum = ln 2 + ln 4 = 3 ln 2 = 2.079442, count = 2, loss = 1.5 ln 2 = 1.039721
    """
    check_inputs("idk_nll", logp, mask, ref_logp, needs_ref=False)
    return token_terms(masked(-logp, mask), torch.ones_like(logp), logp, mask, ref_logp)
