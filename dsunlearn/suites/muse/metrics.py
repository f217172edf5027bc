"""MUSE's metrics as muse_bench computes them (its ``metrics/{verbmem,knowmem,privleak,logger}.py``): pure.

    VerbMem_f   mean over verbmem/forget of ROUGE-L F1(gt cut to its first 128 tokens, greedy continuation of
                the prompt, 128 new tokens)                                                     x 100
    KnowMem_f   mean over knowmem/forget_qa of ROUGE-L F1(answer, greedy answer to the in-context prompt,
                32 new tokens, cut before the first "\\n\\n", "\\nQuestion" or "Question:")      x 100
    KnowMem_r   the same on knowmem/retain_qa with retain_qa_icl                                   x 100
    PrivLeak    (AUC - AUC_retrain) / AUC_retrain x 100, AUC of Min-40% on privleak/forget (label 0) vs
                privleak/holdout (label 1) from the ROC of minus the score (`eval.mia.muse_auc`)

ROUGE is Google's ``rouge_score`` with muse_bench's settings: ``RougeScorer(["rougeL"], use_stemmer=False)``,
``score(target=reference, prediction=generation)``, F-measure (``data.muse.rouge_stemmer`` turns on Porter
stemming, as open-unlearning's MUSE evaluation has it).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

LOG_FILE = "MUSE_EVAL.json"  # open-unlearning's name for its MUSE evaluation log
# Log entries (open-unlearning's metric names) of the generation metrics -> the sets they read.
VERBMEM = "forget_verbmem_ROUGE"
KNOWMEM = {"forget_knowmem_ROUGE": ("knowmem/forget_qa", "knowmem/forget_qa_icl"),
           "retain_knowmem_ROUGE": ("knowmem/retain_qa", "knowmem/retain_qa_icl")}  # fmt: skip

# muse_bench knowmem.py: the generation is cut before the first of these, in this order (each split keeps
# the part before the word, so the order does not change the result).
STOP_WORDS = ("\n\n", "\nQuestion", "Question:")


def knowmem_prompt(icl: Sequence[tuple[str, str]], question: str) -> str:
    """muse_bench's few-shot prompt: each in-context pair as ``"Question: {q}\\nAnswer: {a}\\n\\n"``, then the
    question as ``"Question: {q}\\nAnswer: "`` (with the trailing space)."""
    return "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in icl) + f"Question: {question}\nAnswer: "


def cut_at_stop_words(text: str, words: Sequence[str] = STOP_WORDS) -> str:
    """The text before the first occurrence of any stop word. Example: "Paris\\n\\nQuestion: x" -> "Paris"."""
    for w in words:
        text = text.split(w)[0]
    return text


@cache
def _scorer(stemmer: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stemmer)


def rouge_l(reference: str, generation: str, stemmer: bool = False) -> tuple[float, float]:
    """(ROUGE-L F1, ROUGE-L recall) of `generation` against `reference`, as muse_bench's RougeEvalLogger."""
    s = _scorer(stemmer).score(reference, generation)["rougeL"]
    return s.fmeasure, s.recall


def mean_x100(values: Sequence[float]) -> float:
    """MUSE's reported number: the mean of per-item scores, times 100."""
    return 100.0 * sum(values) / len(values)
