"""Vocabulary and templates of the synthetic MUSE-style news corpus (`dsunlearn.suites.muse.synthetic`).

Everything here is fixed text; all randomness lives in `synthetic.py`. Lists are tuples so that nobody can
mutate them at import time and change every seed's output. Invented words are plain ASCII so that a small
byte-level BPE (~1.4k tokens) splits them into few pieces.

An article is one `StoryKind`'s template with four facts filled in, each unique within the corpus:

    town    one invented word: TOWN_HEADS + MIDS + TOWN_TAILS          e.g. "Brenmoor"
    person  first name + surname, each two syllables                   e.g. "Adric Bradling"
    org     an invented word (ORG_HEADS + MIDS + ORG_TAILS) + the kind's suffix        e.g. "Velcor Party"
    number  an integer, no other digits anywhere in the text           e.g. "412"

and a few filler slots (`fillers`: day, month, job, ...) drawn from short lists that repeat across articles.
The four entity spaces end in disjoint syllable sets, so no entity word equals another kind's word or a
template word (tests/unit/test_muse_synthetic.py checks the whole spaces). `MIDS[0]` is empty: the first
len(heads) x len(tails) towns (and organisation words) are two syllables, longer ones only for big corpora.

Templates use `{fact}` and `{filler}` placeholders; no value contains braces.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple

FACTS = ("town", "person", "org", "number")


class StoryKind(NamedTuple):
    """One kind of news story: its article template and one fixed question per fact.

    `questions[i]` asks for `FACTS[i]` and names another fact of the same article (the town, or the person
    when the town is asked), so that the question identifies its article.
    """

    key: str
    org_suffix: str  # the organisation's second word: "Velcor" + " Party"
    fillers: tuple[str, ...]  # the filler placeholders of `article`, in the order they are drawn
    article: str
    questions: tuple[str, str, str, str]  # in FACTS order


STORY_KINDS: tuple[StoryKind, ...] = (
    StoryKind(
        "election",
        "Party",
        ("day", "month", "job", "place"),
        "{town} has a new mayor. On {day}, {person} won the town election with {number} votes. {person} stood for "
        "the {org}, a small party that was founded last {month}. The new mayor once worked as {job} and has "
        "promised to repair {place}. People in {town} said that they hoped for a quiet and happy year.",
        (
            "Which town elected {person} as its mayor?",
            "Who was elected mayor of {town}?",
            "Which party did the new mayor of {town} stand for?",
            "How many votes did the new mayor of {town} win?",
        ),
    ),
    StoryKind(
        "bridge",
        "Company",
        ("day", "material", "crossing", "job", "month"),
        "A new bridge opened in {town} on {day}. It was designed by {person} and built by the {org} in {number} "
        "days. The bridge is made of {material} and crosses the {crossing} to the east of the market. {person}, "
        "who once worked as {job}, said the hardest part was the cold weather in {month}. Children from {town} "
        "were the first to walk across it.",
        (
            "In which town did a bridge designed by {person} open?",
            "Who designed the new bridge in {town}?",
            "Which company built the new bridge in {town}?",
            "How many days did it take to build the new bridge in {town}?",
        ),
    ),
    StoryKind(
        "fair",
        "Bank",
        ("day", "job", "food", "place", "month"),
        "The spring fair in {town} drew {number} visitors on {day}. It was organised by {person}, who works as "
        "{job} in the town. The {org} paid for the music, the lights and the food stalls. The most popular stall "
        "sold {food}, and the fair ended with a long dance near {place}. {person} hopes to hold another fair in "
        "{month}.",
        (
            "In which town did {person} organise the spring fair?",
            "Who organised the spring fair in {town}?",
            "Which bank paid for the spring fair in {town}?",
            "How many visitors came to the spring fair in {town}?",
        ),
    ),
    StoryKind(
        "factory",
        "Works",
        ("day", "product", "job", "month"),
        "The {org} opened a new factory in {town} on {day}. The factory makes {product} and has hired {number} "
        "workers from the town and the farms around it. It is run by {person}, who worked as {job} before "
        "joining the {org}. The first trucks left {town} in {month}, and the owners say that more jobs will "
        "follow next year.",
        (
            "In which town does {person} run a new factory?",
            "Who runs the new factory in {town}?",
            "Which company opened a new factory in {town}?",
            "How many workers did the new factory in {town} hire?",
        ),
    ),
)

# Filler slots: short lists, repeated across articles; every entry of a list has the same number of words.
# Read-only (a mapping proxy), like the tuples.
FILLERS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType({
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "month": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
    "job": (
        "a baker", "a teacher", "a nurse", "a farmer", "a sailor", "a miner",
        "a tailor", "a painter", "a doctor", "a builder", "a driver", "a cook",
    ),
    "place": (
        "the old library", "the town hall", "the north road", "the harbour wall",
        "the school roof", "the main square", "the stone church", "the river path",
    ),
    "material": ("stone", "steel", "oak", "brick", "iron", "concrete"),
    "crossing": ("river", "canal", "railway", "valley", "stream", "motorway"),
    "food": ("hot bread", "apple pie", "fried fish", "honey cake", "goat cheese", "plum jam", "roast corn"),
    "product": (
        "glass bottles", "wool blankets", "bicycle wheels", "paper bags",
        "clay pots", "wooden chairs", "cotton shirts", "metal pipes",
    ),
})  # fmt: skip

# Entity syllables. Towns and organisation words: head + MIDS[block] + tail; people: first + " " + surname.
MIDS = (
    "", "a", "e", "i", "o", "an", "en", "in", "on", "ar", "er", "or", "al", "el", "il", "ol", "am",
    "em", "is", "os", "ad", "ed", "id", "od", "at", "et", "it", "ot", "ab", "eb", "ib", "ob", "ac", "ec",
)  # fmt: skip
TOWN_HEADS = (
    "Bren", "Ald", "Cas", "Dun", "Elm", "Fal", "Glen", "Hart", "Ing", "Kil", "Lin", "Mar", "Nor", "Oak",
    "Pen", "Ral", "Sel", "Tam", "Ux", "Ven", "Wel", "Yar", "Bal", "Cor", "Dal", "Hes", "Kes", "Lan",
    "Mor", "Ros", "Stan", "Thur", "Wen", "Brig", "Crag", "Hal", "Lud", "Sam", "Tor", "Ash",
)  # fmt: skip
TOWN_TAILS = (
    "moor", "by", "ford", "wick", "ham", "dale", "stead", "holm", "mouth", "field", "bury", "worth",
    "combe", "ley", "thorpe", "gate", "hurst", "wold", "pool", "haven", "cliff", "marsh", "brook", "shaw",
    "fell", "croft", "ness", "mere", "thwaite", "den",
)  # fmt: skip
ORG_HEADS = (
    "Vel", "Trax", "Mun", "Zor", "Kel", "Pax", "Quin", "Rex", "Sol", "Tav", "Ulm", "Vox",
    "Wex", "Xan", "Yel", "Zan", "Bax", "Cron", "Dax", "Fex", "Grom", "Hux", "Jin", "Kov",
    "Lux", "Mox", "Nex", "Oct", "Plex", "Ryn", "Sprax", "Tol", "Unt", "Varn", "Wol", "Zet",
)  # fmt: skip
ORG_TAILS = (
    "cor", "dex", "ix", "ara", "ent", "ova", "ium", "elt", "ast", "ico", "ura", "eon",
    "ant", "ola", "ite", "umo", "ark", "esta", "ine", "oda", "alt", "enko", "ux", "ique",
    "onic", "ax", "ulo", "ept", "ize", "opa", "etta", "imo", "yth", "uma",
)  # fmt: skip
FIRST_HEADS = (
    "Ad", "Bel", "Cam", "Dri", "Es", "Fio", "Gil", "Hen", "Il", "Jas",
    "Kor", "Lu", "Mil", "Nat", "Ol", "Pim", "Qui", "Ren", "Sil", "Tev",
)  # fmt: skip
FIRST_TAILS = ("ric", "na", "len", "mir", "ta", "ro", "vin", "sa", "lia", "mon", "bet", "dra")
SURNAME_HEADS = (
    "Brad", "Cres", "Dow", "Farr", "Gosl", "Hask", "Jenn", "Kipp", "Lamb", "Mell",
    "Nash", "Penn", "Rudd", "Scarl", "Tipp", "Wadd", "Bick", "Corb", "Gadd", "Pock",
)  # fmt: skip
SURNAME_TAILS = ("ling", "ett", "ard", "ins", "ock", "age", "ane", "ier", "ott", "ery", "ell", "urn", "oss", "ow")
