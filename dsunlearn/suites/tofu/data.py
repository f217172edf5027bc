"""TOFU-format data: from the hub (`locuslab/TOFU`), from local JSON/JSONL files, or generated offline.

Every split is a list of dicts with string `question` and `answer`; perturbed splits add `paraphrased_answer`
(str) and `perturbed_answer` (list of str). Items are validated on load so a bad file fails in seconds with
the split, item index and field named, not hours later inside a data loader.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from dsunlearn.config import DataConfig
from dsunlearn.data.files import check_text, parse_records, read_utf8
from dsunlearn.errors import DataError
from dsunlearn.suites.synthetic_sets import synthetic_set

# The configs of the hub dataset (https://huggingface.co/datasets/locuslab/TOFU).
HUB_SPLITS = (
    "full",
    "forget01",
    "forget05",
    "forget10",
    "retain90",
    "retain95",
    "retain99",
    "forget01_perturbed",
    "forget05_perturbed",
    "forget10_perturbed",
    "retain_perturbed",
    "real_authors",
    "real_authors_perturbed",
    "world_facts",
    "world_facts_perturbed",
    "holdout01",
    "holdout05",
    "holdout10",
)
# Authors in no other split (question/answer): the non-members of membership inference, forget{p} -> holdout{p}.
HOLDOUT_SPLITS = ("holdout01", "holdout05", "holdout10")

# The four evaluation sets of TOFU, by role.
EVAL_SPLITS = {
    "forget": "{forget}_perturbed",
    "retain": "retain_perturbed",
    "real_authors": "real_authors_perturbed",
    "world_facts": "world_facts_perturbed",
}


def _local_file(path: Path, split: str) -> Path | None:
    """The file of one split in a local TOFU directory (``<split>.json``, else ``.jsonl``); None if neither."""
    return next((f for f in (path / f"{split}.json", path / f"{split}.jsonl") if f.is_file()), None)


def _read_local(path: Path, split: str) -> tuple[list[dict], Path]:
    """(items, the file they came from) of one split in a local TOFU directory."""
    f = _local_file(path, split)
    if f is None:
        raise DataError(
            f"split '{split}' not found in {path}: expected {split}.json or {split}.jsonl "
            "(JSON array or JSON Lines with question/answer fields)"
        )
    return parse_records(read_utf8(f), f), f


def _read_hub(name: str, split: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split)
    except Exception as e:  # network, auth, unknown config: all the user's to fix
        raise DataError(
            f"could not load '{name}' config '{split}' from the hub ({type(e).__name__}: {e}); "
            "check the name and network, or download it and use data.source=local data.path=DIR"
        ) from None
    part = ds["train"] if "train" in ds else ds[next(iter(ds))]
    return [dict(row) for row in part]


@lru_cache(maxsize=4)
def _synthetic(seed: int, n_authors: int, n_world_facts: int, n_real_authors: int, n_perturbed: int):
    from dsunlearn.suites.tofu import synthetic

    return synthetic.generate(
        seed=seed,
        n_authors=n_authors,
        n_world_facts=n_world_facts,
        n_real_authors=n_real_authors,
        n_perturbed=n_perturbed,
    )


def synthetic_splits(cfg: DataConfig) -> dict[str, list[dict]]:
    """All synthetic splits (generated once per process and cached; callers get copies via load_split)."""
    s = cfg.synthetic
    return _synthetic(s.seed, s.n_authors, s.n_world_facts, s.n_real_authors, s.n_perturbed)


def _short(value, n: int = 40) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= n else text[: n - 3] + "..."


def validate_items(items: list, split: str, where: str) -> list[dict]:
    """Check the TOFU schema of one split; raise DataError naming the item and field."""
    if not isinstance(items, list):
        raise DataError(f"split '{split}' in {where} must be a list of objects, got {type(items).__name__}")
    if not items:
        raise DataError(
            f"split '{split}' in {where} is empty; it needs at least one question/answer item: fill it, or set "
            "data.path / data.forget_split / data.retain_split to a split that has items"
        )
    perturbed = split.endswith("_perturbed")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"split '{split}' item {i} in {where} is a {type(item).__name__}, not an object")
        need = ["question", "answer"] + (["perturbed_answer"] if perturbed else [])
        for key in need:
            if key not in item:
                raise DataError(
                    f"split '{split}' item {i} in {where} has no '{key}' field (has: {', '.join(item)}); "
                    "TOFU items need question, answer" + (", perturbed_answer (list)" if perturbed else "")
                )
        for key in ("question", "answer", "paraphrased_answer"):
            if key in item and not isinstance(item[key], str):
                raise DataError(
                    f"split '{split}' item {i} in {where}: '{key}' must be a string, got "
                    f"{type(item[key]).__name__} {_short(item[key])}; write it as text in quotes"
                )
            if key in item:
                check_text(item[key], f"split '{split}' item {i} in {where}: '{key}'")
        if perturbed:
            pert = item["perturbed_answer"]
            if not isinstance(pert, list) or not pert or not all(isinstance(p, str) for p in pert):
                raise DataError(
                    f"split '{split}' item {i} in {where}: 'perturbed_answer' must be a non-empty list of strings, "
                    f'got {type(pert).__name__} {_short(pert)}; write it as a JSON list: ["wrong 1", "wrong 2"]'
                )
            for p in pert:
                check_text(p, f"split '{split}' item {i} in {where}: 'perturbed_answer'")
    return items


def load_split(cfg: DataConfig, split: str) -> list[dict]:
    """One TOFU split as a list of validated dicts, from the configured source."""
    if cfg.source == "synthetic":
        items, where = synthetic_set(synthetic_splits(cfg), split, "the synthetic data has no split")
    elif cfg.source == "local":
        path = Path(cfg.path or "")
        if not path.is_dir():
            raise DataError(f"data.path '{cfg.path}' is not a directory; point it at the folder of <split>.json files")
        items, file = _read_local(path, split)
        where = str(file)
    else:
        items, where = _read_hub(cfg.hub_name, split), cfg.hub_name
    return validate_items(items, split, where)


def eval_split_name(role: str, forget_split: str) -> str:
    return EVAL_SPLITS[role].format(forget=forget_split)


def holdout_split_name(forget_split: str) -> str:
    """The holdout split matching a forget split (as many authors, none ever trained on): forget10 -> holdout10."""
    return "holdout" + forget_split.removeprefix("forget")


def mia_sets(cfg: DataConfig, max_items: int) -> dict[str, tuple[str, list[dict]]]:
    """Membership inference's sets: {"forget": (split, items), "holdout": (split, items)}, the first
    `max_items` (``eval.max_items``) of ``data.forget_split`` and of its holdout split; DataError (one line)
    for a missing split, saying how to go on without the holdout one."""
    out = {}
    for part, split in (("forget", cfg.forget_split), ("holdout", holdout_split_name(cfg.forget_split))):
        try:
            items = load_split(cfg, split)
        except DataError as e:
            if part == "forget":
                raise
            # a TOFU download from before the holdout splits existed: say how to go on without them
            hint = f"membership inference needs it (TOFU's config '{split}'), or set eval.mia=false"
            raise DataError(f"{e}; {hint}") from None
        out[part] = (split, items[:max_items])
    return out


def finetune_items(cfg: DataConfig, target: str) -> list[dict]:
    """Training items of a fine-tuned model: `full` (the target) or the retain split (the retain model).

    With `train_utility_sets` the real-authors and world-facts items are added: TOFU's base model already knows
    them from pre-training; the tiny model has no pre-training, so it learns them here.
    """
    split = "full" if target == "full" else cfg.retain_split
    items = list(load_split(cfg, split))
    if cfg.train_utility_sets:
        for extra in ("real_authors", "world_facts"):
            items += [{"question": x["question"], "answer": x["answer"]} for x in load_split(cfg, extra)]
    return items


def corpus(cfg: DataConfig) -> list[str]:
    """Every string of the training and evaluation splits (questions, answers, paraphrases, perturbed answers),
    in split order: the text a locally trained tokenizer (the tiny model's) must cover.

    The holdout splits are in it too: a tokenizer that had seen only the forget authors' names would split the
    holdout names into more, rarer pieces, and membership inference would measure the tokenizer. A local
    directory without them (written before TOFU had holdout splits) still trains one, without them.
    """
    texts: list[str] = []
    splits = ["full", "real_authors", "world_facts"] + [eval_split_name(r, cfg.forget_split) for r in EVAL_SPLITS]
    splits += [s for s in HOLDOUT_SPLITS if cfg.source != "local" or _local_file(Path(cfg.path or ""), s)]
    for split in splits:
        for item in load_split(cfg, split):
            texts += [item["question"], item["answer"], item.get("paraphrased_answer", "")]
            texts += item.get("perturbed_answer", [])
    return [t for t in texts if t]
