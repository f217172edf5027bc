"""MMLU's subject -> category table, as lm-evaluation-harness groups its ``mmlu`` task (data, no logic).

Source: EleutherAI/lm-evaluation-harness, ``lm_eval/tasks/mmlu/_generate_configs.py``, dict ``SUBJECTS``
(read at commit 3c511e38b8729ad3e8251640f8923c3bbac7f897; the same table generates the ``mmlu_<category>``
tags of the task YAMLs under ``lm_eval/tasks/mmlu/default/``). lm-eval's ``mmlu`` group is made of the four
groups ``mmlu_stem``, ``mmlu_other``, ``mmlu_social_sciences``, ``mmlu_humanities`` (``_mmlu.yaml``, in that
order), each aggregating ``acc`` and ``acc_norm`` with ``weight_by_size: True`` over its subjects
(``_mmlu_<category>.yaml``). ``tests/unit/test_wmdp_groups.py`` checks that every one of the 57 subjects of
``data.MMLU_SUBJECTS`` is here and nothing else is.
"""

from __future__ import annotations

CATEGORIES = ("stem", "other", "social_sciences", "humanities")  # lm-eval's _mmlu.yaml order

CATEGORY_OF: dict[str, str] = {
    "abstract_algebra": "stem",
    "anatomy": "stem",
    "astronomy": "stem",
    "business_ethics": "other",
    "clinical_knowledge": "other",
    "college_biology": "stem",
    "college_chemistry": "stem",
    "college_computer_science": "stem",
    "college_mathematics": "stem",
    "college_medicine": "other",
    "college_physics": "stem",
    "computer_security": "stem",
    "conceptual_physics": "stem",
    "econometrics": "social_sciences",
    "electrical_engineering": "stem",
    "elementary_mathematics": "stem",
    "formal_logic": "humanities",
    "global_facts": "other",
    "high_school_biology": "stem",
    "high_school_chemistry": "stem",
    "high_school_computer_science": "stem",
    "high_school_european_history": "humanities",
    "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences",
    "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem",
    "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem",
    "high_school_psychology": "social_sciences",
    "high_school_statistics": "stem",
    "high_school_us_history": "humanities",
    "high_school_world_history": "humanities",
    "human_aging": "other",
    "human_sexuality": "social_sciences",
    "international_law": "humanities",
    "jurisprudence": "humanities",
    "logical_fallacies": "humanities",
    "machine_learning": "stem",
    "management": "other",
    "marketing": "other",
    "medical_genetics": "other",
    "miscellaneous": "other",
    "moral_disputes": "humanities",
    "moral_scenarios": "humanities",
    "nutrition": "other",
    "philosophy": "humanities",
    "prehistory": "humanities",
    "professional_accounting": "other",
    "professional_law": "humanities",
    "professional_medicine": "other",
    "professional_psychology": "social_sciences",
    "public_relations": "social_sciences",
    "security_studies": "social_sciences",
    "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences",
    "virology": "other",
    "world_religions": "humanities",
}
