"""The forget set as the objective reads it: the forget answers and, for IdkNLL / IdkDPO, a refusal per question.

An objective's ``spec.answers`` says which answers its log-probs score (``objectives/__init__.py``): the forget
answers, each forget question's alternate (refusal) answer (``data/refusals.py``), or both as pairs.
`ForgetEncodings` holds the encodings of both and theta_o's log-probs of what the objective reads, builds the
objective's micro-batches and counts its units; the G-effect's forget risk always reads the forget answers
(`answer_batch`). The unlearning loop and the offline G-effect build their batches here, so both see the same
refusal for an item (it depends on run.seed and the item's index only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from dsunlearn.data.collate import Encoded
from dsunlearn.data.refusals import read_refusals, refusal_items
from dsunlearn.engine.reference import precompute_forget_ref
from dsunlearn.engine.unlearn_engine import MicroBatch
from dsunlearn.errors import ConfigError
from dsunlearn.objectives import ALTERNATE, FORGET, OBJECTIVES, PAIR, ObjectiveSpec
from dsunlearn.suites.base import QA, TrainingSet
from dsunlearn.unlearn_losses import answer_tokens, global_count


def refusals_for(spec: ObjectiveSpec, forget_set: TrainingSet, data) -> list[str] | None:
    """The refusal sentences `spec` trains toward (``data.idk_file`` or the shipped list), None if it reads the
    forget answers only. Read before the tokenizer and the model, so a bad file fails at once.

    Raises a one-line ConfigError naming the suite when the forget set is not question/answer items (MUSE's
    text documents have no question to refuse), and the DataError of `read_refusals` for a bad file.
    """
    if spec.answers == FORGET:
        return None
    if forget_set.kind != QA:
        others = ", ".join(name for name, s in OBJECTIVES.items() if s.answers == FORGET)
        raise ConfigError(
            f"objective.name={spec.name} trains each forget question toward a refusal answer, but "
            f"data.suite={data.suite}'s forget set '{forget_set.split}' is text documents, without questions; "
            f"use it with a question/answer suite (data.suite=tofu), or choose another objective: {others}"
        )
    return read_refusals(data.idk_file)


@dataclass
class ForgetEncodings:
    """The encoded forget set: per item its forget answer and, for alternate/pair objectives, its refusal answer
    (same question, same prompt format); theta_o's per-item log-probs of each once `precompute_reference` ran."""

    answers: list[Encoded]
    alternate: list[Encoded] | None = None
    answers_ref: list[torch.Tensor] | None = None
    alternate_ref: list[torch.Tensor] | None = None

    @classmethod
    def encode(cls, forget_set: TrainingSet, tokenizer, data, refusals: list[str] | None, seed: int) -> ForgetEncodings:
        """`forget_set` encoded under `data`; with `refusals` (`refusals_for`), each item's refusal answer too,
        chosen by (`seed`, item index)."""
        answers = forget_set.encode(tokenizer, data)
        if refusals is None:
            return cls(answers)
        items = refusal_items(forget_set.items, refusals, seed)
        alt = dataclasses.replace(forget_set, split=f"{forget_set.split} with refusal answers", items=items)
        return cls(answers, alt.encode(tokenizer, data))

    def head(self, n: int) -> ForgetEncodings:
        """The first `n` items (the offline G-effect's probe), with their refusals and reference log-probs."""
        fields = (self.answers, self.alternate, self.answers_ref, self.alternate_ref)
        return ForgetEncodings(*(x[:n] if x is not None else None for x in fields))

    def __len__(self) -> int:
        return len(self.answers)

    def precompute_reference(self, spec: ObjectiveSpec, module, batch_size: int, pad: int) -> None:
        """theta_o's log-probs of the answers `spec` reads (`module` must still be theta_o: before step 0)."""
        if not spec.needs_reference_logprobs:  # a logits objective (UNDIAL) runs the reference model instead
            return
        if spec.answers in (FORGET, PAIR):
            self.answers_ref = precompute_forget_ref(module, self.answers, batch_size, pad)
        if spec.answers in (ALTERNATE, PAIR):
            self.alternate_ref = precompute_forget_ref(module, self.alternate, batch_size, pad)

    def units(self, spec: ObjectiveSpec, indices: list[int]) -> float:
        """The objective's units in the global batch `indices`: tokens or sequences of the answers it reads; for a
        pair objective the pairs whose two answers both have an answer token."""
        if spec.answers == FORGET:
            return global_count(self.answers, indices, spec.unit)
        if spec.answers == ALTERNATE:
            return global_count(self.alternate, indices, spec.unit)
        return float(sum(1 for i in indices if answer_tokens(self.answers[i]) and answer_tokens(self.alternate[i])))

    def objective_batch(self, spec: ObjectiveSpec, indices: list[int], pad: int, device) -> MicroBatch:
        """The micro-batch `spec`'s loss closure reads (`unlearn_losses.objective_loss`): the forget answers, the
        refusals, or both paired (forget answers first), with theta_o's log-probs if `spec` needs them."""
        ref = spec.needs_reference_logprobs
        if spec.answers == PAIR:
            refs = (self.answers_ref, self.alternate_ref) if ref else None
            return MicroBatch.build_pairs(self.answers, self.alternate, indices, pad, device, refs)
        if spec.answers == ALTERNATE:
            return MicroBatch.build(self.alternate, indices, pad, device, self.alternate_ref if ref else None)
        return MicroBatch.build(self.answers, indices, pad, device, self.answers_ref if ref else None)

    def answer_batch(self, indices: list[int], pad: int, device) -> MicroBatch:
        """The forget answers of `indices` (the forget risk R(D_f) of the G-effect), no reference log-probs."""
        return MicroBatch.build(self.answers, indices, pad, device)
