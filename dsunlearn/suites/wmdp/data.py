"""WMDP-format data: from the hub, local files, or generated (``synthetic.py``).

Sets by name, and where each comes from on the hub (``datasets.load_dataset(repo, config, split=split)``):

    wmdp/<bio|cyber|chem>     data.hub_name (cais/wmdp), config wmdp-<subset>, split test   questions
    mmlu/<subject>            data.wmdp.mmlu_hub (cais/mmlu), config <subject>, split test  questions
    bio-forget                data.wmdp.bio_forget_hub (cais/wmdp-bio-forget-corpus, gated), split train   text
    cyber-forget              data.wmdp.cyber_forget_hub (cais/wmdp-cyber-forget-corpus), split train      text
    corpora/<cyber-forget|cyber-retain|bio-retain>
                              data.wmdp.corpora_hub (cais/wmdp-corpora, the GRU code's), config <name>-corpus,
                              split train                                                                  text
    wikitext                  data.wmdp.wikitext_hub (wikitext), config wikitext-2-raw-v1, split test      text

Questions are ``{"question": str, "choices": [4 str], "answer": int 0..3}`` (MMLU's also carry ``subject``);
texts ``{"text": str}`` (other fields, e.g. the bio corpus' title and doi, are dropped). ``local``: the same
names as files under ``data.path``: ``wmdp/bio.json``, ``mmlu/anatomy.jsonl``, ``bio-forget.jsonl``,
``corpora/cyber-retain.json``, ``wikitext.json`` (JSON arrays or JSON Lines; a text file's records may be bare
strings). A forget or retain split joins sets with "+" (``bio-forget+cyber-forget``, RMU's forget data).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from dsunlearn.config import DataConfig
from dsunlearn.data.files import check_text, parse_records, read_utf8
from dsunlearn.errors import DataError
from dsunlearn.suites.synthetic_sets import synthetic_set
from dsunlearn.suites.wmdp.mmlu_categories import CATEGORIES

SUBSETS = ("bio", "cyber", "chem")
# lm_eval's wmdp task descriptions: "... about {subject}."
SUBSET_SUBJECTS = {"bio": "biology", "cyber": "cybersecurity", "chem": "chemistry"}
MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)  # fmt: skip
CORPORA = ("cyber-forget", "cyber-retain", "bio-retain")  # cais/wmdp-corpora's configs, "<name>-corpus"
TEXT_SETS = ("bio-forget", "cyber-forget", "wikitext", *(f"corpora/{c}" for c in CORPORA))
GATED = ("bio-forget",)  # WMDP's bio forget corpus is gated behind an access request on the hub
WIKITEXT_CONFIG = "wikitext-2-raw-v1"


def is_question_set(name: str) -> bool:
    return name.startswith(("wmdp/", "mmlu/"))


def _hub_source(cfg: DataConfig, name: str) -> tuple[str, str | None, str]:
    """(repo, config, split) of a set on the hub."""
    w = cfg.wmdp
    if name.startswith("wmdp/"):
        return cfg.hub_name, f"wmdp-{name[5:]}", "test"
    if name.startswith("mmlu/"):
        return w.mmlu_hub, name[5:], "test"
    if name.startswith("corpora/"):
        return w.corpora_hub, f"{name[8:]}-corpus", "train"
    return {"bio-forget": (w.bio_forget_hub, None, "train"), "cyber-forget": (w.cyber_forget_hub, None, "train"),
            "wikitext": (w.wikitext_hub, WIKITEXT_CONFIG, "test")}[name]  # fmt: skip


def _refused(e: BaseException) -> bool:
    """Whether a hub error is an access refusal (gated repository, no or insufficient token)."""
    text = f"{type(e).__name__} {e}".lower()
    return any(s in text for s in ("gated", "401", "403", "unauthorized", "forbidden", "access to dataset"))


def hub_error(name: str, repo: str, config: str | None, split: str, e: BaseException) -> DataError:
    """The one-line DataError for a set the hub did not give; an access request named for a gated one."""
    where = f"'{repo}'" + (f" config '{config}'" if config else "") + f" split '{split}'"
    if _refused(e):
        return DataError(
            f"the hub refused {where} (WMDP set '{name}'; {type(e).__name__}): it is gated; request access on "
            f"https://huggingface.co/datasets/{repo} and log in (`huggingface-cli login` or HF_TOKEN), or download "
            "it and use data.source=local"
        )
    return DataError(
        f"could not load {where} (WMDP set '{name}') from the hub ({type(e).__name__}: {str(e)[:200]}); check the "
        "name and network, or download it and use data.source=local"
    )


def _read_hub(cfg: DataConfig, name: str) -> tuple[list, str]:
    import datasets

    repo, config, split = _hub_source(cfg, name)
    try:
        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # network, auth, unknown config or split: all the user's to fix
        raise hub_error(name, repo, config, split, e) from None
    return [dict(row) for row in ds], f"{repo}" + (f"/{config}" if config else "")


def _read_local(cfg: DataConfig, name: str) -> tuple[list, str]:
    root = Path(cfg.path or "")
    if not root.is_dir():
        raise DataError(f"data.path '{cfg.path}' is not a directory; point it at a folder of WMDP-layout files")
    for suffix in (".json", ".jsonl"):
        f = root / f"{name}{suffix}"
        if f.is_file():
            return parse_records(read_utf8(f), f), str(f)
    raise DataError(f"WMDP set '{name}' not found under {root}: expected {name}.json or {name}.jsonl")


@lru_cache(maxsize=4)
def _synthetic(seed: int, n_hazard: int, n_general: int) -> dict:
    from dsunlearn.suites.wmdp import synthetic

    return synthetic.generate(seed=seed, n_hazard=n_hazard, n_general=n_general)


def synthetic_sets(cfg: DataConfig) -> dict[str, list[dict]]:
    """Every synthetic set by name (generated once per process; `load` hands out copies)."""
    return _synthetic(cfg.synthetic.seed, cfg.wmdp.n_hazard, cfg.wmdp.n_general)


def _question(item, name: str, i: int, where: str) -> dict:
    what = f"WMDP set '{name}' item {i} in {where}"
    if not isinstance(item, dict):
        raise DataError(f"{what} is a {type(item).__name__}, not an object with question, choices, answer")
    q, choices, answer = item.get("question"), item.get("choices"), item.get("answer")
    if not isinstance(q, str):
        raise DataError(f"{what}: 'question' must be a string; questions have question, choices (4), answer (0-3)")
    if not (isinstance(choices, list) and len(choices) == 4 and all(isinstance(c, str) for c in choices)):
        raise DataError(f"{what}: 'choices' must be a list of 4 strings (the A-D options)")
    if not (isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < 4):
        raise DataError(f"{what}: 'answer' must be an integer 0-3 (the index of the right choice), got {answer!r}")
    for text in (q, *choices):
        check_text(text, what)
    out = {"question": q, "choices": list(choices), "answer": answer}
    if isinstance(item.get("subject"), str):
        out["subject"] = item["subject"]
    return out


def _text(item, name: str, i: int, where: str) -> dict:
    what = f"WMDP set '{name}' item {i} in {where}"
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        raise DataError(f"{what}: a text set's items are strings or objects with a string 'text'")
    check_text(item["text"], what)
    return {"text": item["text"]}


def validate(items: list, name: str, where: str) -> list[dict]:
    """The set's items in WMDP's fields; DataError naming the set, item and field otherwise."""
    if not isinstance(items, list):
        raise DataError(f"WMDP set '{name}' in {where} must be a list, got {type(items).__name__}")
    if not items:
        raise DataError(f"WMDP set '{name}' in {where} is empty; it needs at least one item")
    check = _question if is_question_set(name) else _text
    return [check(it, name, i, where) for i, it in enumerate(items)]


def _check_name(name: str) -> None:
    ok = name in TEXT_SETS or (name.startswith("wmdp/") and name[5:] in SUBSETS) or (
        name.startswith("mmlu/") and "/" not in name[5:] and name[5:])  # fmt: skip
    if not ok:
        raise DataError(
            f"'{name}' is not a WMDP set; sets are wmdp/<{'|'.join(SUBSETS)}>, mmlu/<subject>, {', '.join(TEXT_SETS)}"
        )


def load(cfg: DataConfig, name: str) -> list[dict]:
    """One set from the configured source, validated."""
    _check_name(name)
    if cfg.source == "synthetic":
        items, where = synthetic_set(synthetic_sets(cfg), name, "the synthetic WMDP set has no")
    elif cfg.source == "local":
        items, where = _read_local(cfg, name)
    else:
        items, where = _read_hub(cfg, name)
    return validate(items, name, where)


def training_texts(cfg: DataConfig, split: str) -> list[dict]:
    """The documents of a forget/retain split ("+" joins sets), each longer than data.wmdp.min_chars (RMU's
    filter); DataError when a set is a question set or none is left."""
    items = []
    for name in split.split("+"):
        if name not in TEXT_SETS:
            raise DataError(f"WMDP split '{split}': '{name}' is not a text set; choose from {', '.join(TEXT_SETS)}")
        items += [it for it in load(cfg, name) if len(it["text"]) > cfg.wmdp.min_chars]
    if not items:
        raise DataError(f"WMDP split '{split}' has no text longer than data.wmdp.min_chars={cfg.wmdp.min_chars}")
    return items


def subsets(cfg: DataConfig) -> list[str]:
    """The WMDP subsets evaluated (data.wmdp.subsets; auto: all the source has)."""
    spec = cfg.wmdp.subsets
    if spec == "auto":
        if cfg.source == "synthetic":
            return [n[5:] for n in synthetic_sets(cfg) if n.startswith("wmdp/")]
        return list(SUBSETS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [s for s in names if s not in SUBSETS]
    if bad or not names:
        raise DataError(f"data.wmdp.subsets={spec!r}: choose auto or a comma-separated list of {', '.join(SUBSETS)}")
    return names


def mmlu_subjects(cfg: DataConfig) -> list[str]:
    """The MMLU subjects evaluated (data.wmdp.mmlu_subjects; all: the source's)."""
    spec = cfg.wmdp.mmlu_subjects
    if spec == "all":
        if cfg.source == "synthetic":
            return [n[5:] for n in synthetic_sets(cfg) if n.startswith("mmlu/")]
        return list(MMLU_SUBJECTS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise DataError(f"data.wmdp.mmlu_subjects={spec!r}: give all or a comma-separated list of subjects")
    clash = next((s for s in names if s in CATEGORIES), None)
    if clash:  # its log entry mmlu_<name>_acc would be overwritten by the category group's
        raise DataError(f"data.wmdp.mmlu_subjects: a subject named '{clash}' clashes with lm-eval's MMLU category "
                        f"group mmlu_{clash}; rename that subject (and its file mmlu/{clash}.json)")  # fmt: skip
    return names


def question_sets(cfg: DataConfig) -> dict[str, tuple[str, list[dict]]]:
    """set name -> (the subject its prompt names, its questions): the WMDP subsets, then the MMLU subjects."""
    out = {f"wmdp/{s}": (SUBSET_SUBJECTS[s], load(cfg, f"wmdp/{s}")) for s in subsets(cfg)}
    for subject in mmlu_subjects(cfg):
        out[f"mmlu/{subject}"] = (subject.replace("_", " "), load(cfg, f"mmlu/{subject}"))
    return out
