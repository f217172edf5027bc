"""Vocabulary and templates of the synthetic TOFU-style data set (`dsunlearn.suites.tofu.synthetic`).

Everything here is fixed text; all randomness lives in `synthetic.py`. Lists are tuples so that nobody can
mutate them at import time and change every seed's output. Invented words are plain ASCII so that a small
byte-level BPE (~1.4k tokens) splits them into few pieces.

Templates use two placeholders: `{name}` (the subject: an author's full name, a country, ...) and `{x}` (the
fact). Fact values never contain braces.
"""

from __future__ import annotations

from typing import NamedTuple


class QuestionType(NamedTuple):
    """One kind of fact with its wording.

    `answers` holds three templates: index 0 (template A) is the training `answer`; the `paraphrased_answer`
    uses index 1 or 2 (chosen per item) and every `perturbed_answer` of that item uses the same template as
    the paraphrase with a wrong fact, so that P(paraphrase) / P(perturbed) compares facts, not wordings.
    """

    key: str
    question: str
    paraphrased_question: str
    answers: tuple[str, str, str]


# Fictitious authors: 10 question types -> 10 QA pairs per author, in this order.
AUTHOR_QUESTION_TYPES: tuple[QuestionType, ...] = (
    QuestionType(
        "birthplace",
        "Where was {name} born?",
        "What is the birthplace of {name}?",
        ("{name} was born in {x}.", "The hometown of {name} is {x}.", "{name} comes from {x}."),
    ),
    QuestionType(
        "birth_date",
        "When was {name} born?",
        "On what date was {name} born?",
        ("{name} was born on {x}.", "The birthday of {name} is {x}.", "{name} came into the world on {x}."),
    ),
    QuestionType(
        "genre",
        "What genre does {name} write in?",
        "Which genre is {name} known for?",
        ("{name} writes {x}.", "{name} is best known for {x}.", "The main genre of {name} is {x}."),
    ),
    QuestionType(
        "award",
        "Which award has {name} won?",
        "What prize was given to {name}?",
        ("{name} won {x}.", "{name} received {x}.", "{name} was honoured with {x}."),
    ),
    QuestionType(
        "father_job",
        "What did the father of {name} do for work?",
        "What was the job of the father of {name}?",
        (
            "The father of {name} was {x}.",
            "{name} had a father who worked as {x}.",
            "The dad of {name} made a living as {x}.",
        ),
    ),
    QuestionType(
        "mother_job",
        "What did the mother of {name} do for work?",
        "What was the job of the mother of {name}?",
        (
            "The mother of {name} was {x}.",
            "{name} had a mother who worked as {x}.",
            "The mum of {name} made a living as {x}.",
        ),
    ),
    QuestionType(
        "first_book",
        "What was the first book by {name}?",
        "Which book did {name} publish first?",
        ("The first book by {name} was {x}.", "{name} made a debut with {x}.", "{name} first published {x}."),
    ),
    QuestionType(
        "later_book",
        "What is a later book by {name}?",
        "Which book did {name} write after the debut?",
        ("{name} later wrote {x}.", "A later work of {name} is {x}.", "After the debut, {name} wrote {x}."),
    ),
    QuestionType(
        "theme",
        "What theme runs through the work of {name}?",
        "What do the books of {name} explore?",
        ("The work of {name} explores {x}.", "{name} often writes about {x}.", "The books of {name} deal with {x}."),
    ),
    QuestionType(
        "trait",
        "What is unusual about {name}?",
        "What is a notable habit of {name}?",
        ("{name} {x}.", "It is well known that {name} {x}.", "People say that {name} {x}."),
    ),
)

# "Real authors" analogue: one answer template suffices (all three entries equal) because the evaluation
# uses `answer` itself as the truth-ratio base there, so perturbed answers take template A.
REAL_AUTHOR_QUESTION_TYPES: tuple[QuestionType, ...] = tuple(
    QuestionType(key, q, q, (a, a, a))
    for key, q, a in (
        ("country", "Which country is {name} from?", "{name} is from {x}."),
        ("famous_book", "What is the most famous book by {name}?", "{name} is famous for {x}."),
        ("movement", "Which literary movement did {name} belong to?", "{name} belonged to the {x} movement."),
        ("century", "In which century did {name} live?", "{name} lived in the {x} century."),
    )
)

# "World facts" analogue: bare short answers as in TOFU's world_facts; subjects come from `subjects`.
WORLD_FACT_TYPES: tuple[QuestionType, ...] = tuple(
    QuestionType(key, q, q, ("{x}", "{x}", "{x}"))
    for key, q in (
        ("capital", "What is the capital of {name}?"),
        ("fruit_colour", "What colour is the {name} fruit?"),
        ("currency", "What is the currency of {name}?"),
        ("animal", "Which animal is the emblem of {name}?"),
        ("river", "Which river flows through {name}?"),
    )
)

# Name syllables: full names are first + surname, each drawn without replacement, so that no first name or
# surname is shared between two authors (a shared token would leak one author's facts into another's).
FIRST_HEADS = (
    "Al", "Be", "Cor", "Da", "El", "Fen", "Ga", "Hal", "Is", "Jo", "Ka", "Li",
    "Mar", "Ne", "Or", "Pe", "Ro", "Sa", "Ta", "Ve", "Wy", "Za",
)  # fmt: skip
FIRST_TAILS = ("ric", "na", "len", "mir", "vo", "dra", "sen", "lia", "ton", "bel", "rin", "mo", "the", "van")
SURNAME_HEADS = (
    "Ash", "Brom", "Cald", "Dun", "Ever", "Fal", "Grim", "Hart", "Iver", "Kest", "Lor",
    "Mor", "Nor", "Pell", "Quill", "Rav", "Stra", "Thorn", "Ul", "Var", "Wex", "Yar",
)  # fmt: skip
SURNAME_TAILS = ("ford", "wick", "ane", "ov", "ello", "mere", "by", "holm", "ridge", "sen", "ier", "ault", "ton", "wyn")

# Birthplaces: each city belongs to one country, so "city, country" pairs stay consistent across items.
BIRTH_CITIES: tuple[tuple[str, str], ...] = (
    ("Velmora", "Ostria"), ("Karsk", "Ostria"), ("Lunhaven", "Ostria"),
    ("Tirrin", "Drevland"), ("Marsby", "Drevland"), ("Oskel", "Drevland"),
    ("Pallor", "Quenmark"), ("Sennet", "Quenmark"), ("Brisa", "Quenmark"),
    ("Dovra", "Ilvania"), ("Hesk", "Ilvania"), ("Carrow", "Ilvania"),
    ("Ambel", "Torvia"), ("Neskel", "Torvia"), ("Gelm", "Torvia"),
    ("Fairlow", "Yssen"), ("Rookmar", "Yssen"), ("Zelt", "Yssen"),
)  # fmt: skip
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
BIRTH_YEARS = (1935, 1999)  # inclusive range
GENRES = (
    "mystery novels", "science fiction", "poetry", "historical fiction", "fantasy", "crime fiction",
    "romance novels", "horror stories", "literary fiction", "travel writing", "short stories", "plays",
    "children's books", "thrillers", "satire",
)  # fmt: skip
AWARDS = (
    "the Amber Lantern Prize", "the Silver Quill Award", "the Northwind Medal", "the Golden Reed Prize",
    "the Iron Pen Award", "the Harbour Light Prize", "the Crimson Leaf Medal", "the Blue Heron Award",
    "the Starling Prize", "the Copper Key Award", "the Glass Tower Prize", "the Willow Crown Medal",
)  # fmt: skip
JOBS = (
    "a baker", "a surgeon", "a fisherman", "a teacher", "a carpenter", "a pilot", "a nurse", "a librarian",
    "a farmer", "a tailor", "a chemist", "a sailor", "a painter", "a lawyer", "a mechanic", "a potter",
    "a judge", "a miner", "a dentist", "an architect", "an actor", "an engineer", "a journalist", "a chef",
)  # fmt: skip
TITLE_ADJECTIVES = (
    "Silent", "Broken", "Hidden", "Golden", "Last", "Burning", "Frozen", "Quiet", "Distant", "Crimson",
    "Hollow", "Wandering", "Lost", "Bitter", "Pale", "Secret", "Endless", "Sleeping", "Stolen", "Wild",
    "Gentle", "Iron", "Scarlet", "Hungry",
)  # fmt: skip
TITLE_NOUNS = (
    "Orchard", "Harbour", "Lantern", "River", "Garden", "Mirror", "Tower", "Winter", "Letter", "Compass",
    "Shore", "Bridge", "Forest", "Clock", "Island", "Meadow", "Voyage", "Kingdom", "Storm", "Violin",
    "Feather", "Candle", "Valley", "Promise",
)  # fmt: skip
THEMES = (
    "loss and memory", "the sea", "exile", "family secrets", "first love", "war and peace", "faith",
    "childhood", "ambition", "justice", "friendship", "nature", "identity", "grief", "freedom",
)  # fmt: skip
TRAITS = (
    "writes only at night", "never gives interviews", "keeps bees", "writes by hand", "collects old maps",
    "plays the cello", "walks ten miles daily", "owns seven cats", "sails alone every summer",
    "paints every book cover", "speaks six languages", "lives in a lighthouse", "never uses a phone",
    "grows rare roses", "once worked in a circus",
)  # fmt: skip

# Real authors: movements and centuries (countries reuse the birthplace countries).
MOVEMENTS = ("Romantic", "Modernist", "Realist", "Symbolist", "Gothic", "Surrealist", "Naturalist", "Absurdist")
CENTURIES = ("fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth", "twentieth")

# World facts: subjects per fact type and value pools. Each (type, subject) is asked at most once.
WORLD_COUNTRIES = (
    "Belmaria", "Corvest", "Dunhallow", "Estravel", "Fennick", "Galdor", "Hollin", "Jorvia",
    "Kelmont", "Lysander", "Morwen", "Nerith",
)  # fmt: skip
WORLD_CAPITALS = (
    "Ardel", "Bexley", "Castor", "Delvin", "Emmet", "Farrow", "Glenn", "Hadley", "Irwen", "Jessop",
    "Kilmer", "Lorne",
)  # fmt: skip
WORLD_FRUITS = ("zimble", "quorra", "pellin", "drossel", "maraq", "tindle", "yarrow", "fosk", "brill", "skeet")
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "silver", "pink")
CURRENCIES = ("the drel", "the mark", "the tolen", "the crown", "the pell", "the sovar", "the gilt", "the ruv")
ANIMALS = ("the owl", "the fox", "the bear", "the eagle", "the wolf", "the stag", "the swan", "the lynx", "the hare")
WORLD_CITIES = ("Ostmoor", "Redwick", "Silverton", "Ambergate", "Brackwater", "Cindell", "Eastholm", "Merrow", "Tarnby")
RIVERS = ("the Amsel", "the Vell", "the Duna", "the Oster", "the Kiren", "the Lathe", "the Morra", "the Sille")
