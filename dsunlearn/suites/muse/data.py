"""MUSE-format data: from the hub (`muse-bench/MUSE-News`, `muse-bench/MUSE-Books`), local files, or generated.

A MUSE set is named ``<config>/<split>`` as on the hub::

    raw/forget, raw/retain1, raw/retain2, raw/holdout        {"text"}             training and fine-tuning text
    verbmem/forget                                           {"prompt", "gt"}     VerbMem
    knowmem/forget_qa, forget_qa_icl, retain_qa, retain_qa_icl  {"question", "answer"}  KnowMem
    privleak/forget, privleak/retain, privleak/holdout       {"text"}             PrivLeak and the MIA attacks

Sources (``data.source``):

- ``hub``: ``datasets.load_dataset(hub_name, config, split=split, revision=data.muse.revision)``. Revisions
  before mid-2024 call the retain QA and privleak splits ``retain2_qa`` / ``retain2_qa_icl`` / ``retain2``;
  when the current name is missing the older one is read (the same items).
- ``local``: ``<data.path>/<config>/<split>.json`` or ``.jsonl`` (muse_bench's ``load_data.py`` layout: its
  ``privleak/*.json`` and ``raw/*.json`` are arrays of strings, read as ``{"text": s}``), or for ``raw`` a
  ``.txt`` file (muse_bench's ``raw/<split>.txt``: the documents joined by a blank line, split back on it).
- MUSE-News' ``scal/forget_1..4`` and ``sust/forget_1..4`` (``{"text"}``) load like the others and can be the
  forget set (``data.forget_split=scal/forget_2``); the synthetic corpus has none.
- ``synthetic``: the offline corpus of ``synthetic.py`` (seed ``data.synthetic.seed``, sizes ``data.muse.n_*``).

Training sets are DOCUMENTS (``data/documents.py``): forget = ``raw/<forget_split>``, retain =
``raw/<retain_split>``; the target ("full") is fine-tuned on forget + retain1 + retain2, the retrained model
("retain") on retain1 + retain2, as MUSE built its targets and retrained models.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from dsunlearn.config import DataConfig
from dsunlearn.data.files import check_text, parse_records, read_utf8
from dsunlearn.errors import DataError
from dsunlearn.suites.synthetic_sets import synthetic_set

FIELDS: dict[str, tuple[str, ...]] = {"raw": ("text",), "privleak": ("text",), "verbmem": ("prompt", "gt"),
                                      "knowmem": ("question", "answer"), "scal": ("text",),
                                      "sust": ("text",)}  # fmt: skip
# Hub split names of older revisions of muse-bench/MUSE-*, read when the current name is missing.
OLD_NAMES = {"knowmem/retain_qa": "knowmem/retain2_qa", "knowmem/retain_qa_icl": "knowmem/retain2_qa_icl",
             "privleak/retain": "privleak/retain2"}  # fmt: skip
TXT_SEPARATOR = "\n\n"  # muse_bench's raw/<split>.txt joins the documents with it


def _read_hub(cfg: DataConfig, name: str) -> list:
    import datasets

    config, split = name.split("/")
    errors = []
    for candidate in (name, OLD_NAMES.get(name)):
        if candidate is None:
            continue
        try:
            ds = datasets.load_dataset(cfg.hub_name, config, split=candidate.split("/")[1], revision=cfg.muse.revision)
            return [dict(row) for row in ds]
        except Exception as e:  # network, auth, unknown config or split: all the user's to fix
            errors.append(f"{type(e).__name__}: {str(e)[:200]}")
    raise DataError(
        f"could not load '{cfg.hub_name}' config '{config}' split '{split}' at revision '{cfg.muse.revision}' from "
        f"the hub ({errors[0]}); check the name, revision and network, or download it and use data.source=local"
    )


def _read_local(cfg: DataConfig, name: str) -> tuple[list, Path]:
    root = Path(cfg.path or "")
    if not root.is_dir():
        raise DataError(f"data.path '{cfg.path}' is not a directory; point it at a folder of <config>/<split>.json")
    config, split = name.split("/")
    for suffix in (".json", ".jsonl") + ((".txt",) if config == "raw" else ()):
        f = root / config / f"{split}{suffix}"
        if f.is_file():
            text = read_utf8(f)
            if suffix == ".txt":
                return [d for d in text.split(TXT_SEPARATOR) if d.strip()], f
            return parse_records(text, f), f
    raise DataError(
        f"MUSE set '{name}' not found under {root}: expected {config}/{split}.json or .jsonl"
        + (" or .txt" if config == "raw" else "")
        + " (muse_bench's data/<corpus>/ layout)"
    )


@lru_cache(maxsize=4)
def _synthetic(seed: int, n_forget: int, n_retain: int, n_holdout: int, n_icl: int) -> dict:
    from dsunlearn.suites.muse import synthetic

    return synthetic.generate(seed=seed, n_forget=n_forget, n_retain=n_retain, n_holdout=n_holdout, n_icl=n_icl)


def synthetic_sets(cfg: DataConfig) -> dict[str, list[dict]]:
    """Every synthetic set by name (generated once per process; `load` hands out copies)."""
    m = cfg.muse
    return _synthetic(cfg.synthetic.seed, m.n_forget, m.n_retain, m.n_holdout, m.n_icl)


def validate(items: list, name: str, where: str) -> list[dict]:
    """The set's items with MUSE's fields, all strings (a bare string is a ``{"text": ...}`` item where the set
    holds texts); DataError naming the set, item and field otherwise."""
    fields = FIELDS[name.split("/")[0]]
    if not isinstance(items, list):
        raise DataError(f"MUSE set '{name}' in {where} must be a list, got {type(items).__name__}")
    if not items:
        raise DataError(f"MUSE set '{name}' in {where} is empty; it needs at least one item")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str) and fields == ("text",):
            item = {"text": item}
        if not isinstance(item, dict):
            raise DataError(f"MUSE set '{name}' item {i} in {where} is a {type(item).__name__}, not an object")
        for key in fields:
            value = item.get(key)
            if not isinstance(value, str):
                got = "no such field" if key not in item else f"a {type(value).__name__}"
                raise DataError(
                    f"MUSE set '{name}' item {i} in {where}: '{key}' must be a string ({got}); MUSE's "
                    f"'{name.split('/')[0]}' items have {', '.join(fields)}"
                )
            check_text(value, f"MUSE set '{name}' item {i} in {where}: '{key}'")
        out.append({k: item[k] for k in fields})
    return out


def load(cfg: DataConfig, name: str) -> list[dict]:
    """One MUSE set (``<config>/<split>``) from the configured source, validated."""
    config = name.split("/")[0]
    if config not in FIELDS or name.count("/") != 1:
        raise DataError(f"'{name}' is not a MUSE set; sets are <config>/<split> with config in {', '.join(FIELDS)}")
    if cfg.source == "synthetic":
        items, where = synthetic_set(synthetic_sets(cfg), name, "the synthetic MUSE corpus has no set")
    elif cfg.source == "local":
        items, file = _read_local(cfg, name)
        where = str(file)
    else:
        items, where = _read_hub(cfg, name), f"{cfg.hub_name}@{cfg.muse.revision}"
    return validate(items, name, where)


def training_set_name(split: str) -> str:
    """The set a forget/retain split names: ``raw/<split>``, or the set itself for MUSE-News' scalability and
    sustainability forget sets (``scal/forget_1`` .. ``sust/forget_4``)."""
    return split if "/" in split else f"raw/{split}"


def finetune_sets(cfg: DataConfig, target: str) -> list[str]:
    """The raw sets a fine-tuned model learns: the target (full) all of them, the retrained model the retain
    ones (MUSE's `muse-bench/MUSE-*_target` and retrained models)."""
    return (["raw/forget"] if target == "full" else []) + ["raw/retain1", "raw/retain2"]


EVAL_SETS = ("verbmem/forget", "knowmem/forget_qa", "knowmem/forget_qa_icl", "knowmem/retain_qa",
             "knowmem/retain_qa_icl", "privleak/forget", "privleak/holdout")  # fmt: skip


def corpus(cfg: DataConfig) -> list[str]:
    """Every string of the training and evaluation sets, in set order (a locally trained tokenizer's text)."""
    names = [training_set_name(cfg.forget_split), "raw/retain1", "raw/retain2", "raw/holdout", *EVAL_SETS]
    texts: list[str] = []
    for name in dict.fromkeys(names):
        for item in load(cfg, name):
            texts += [v for v in item.values() if v]
    return texts
