"""A deterministic, TOFU-shaped benchmark of fictitious authors.

Each author has ``qa_per_author`` facts drawn from large spaces (invented full names,
titles, places, full dates), so a model that never saw an author almost never states its
facts by chance. Every relation has several question phrasings; each author is trained on
all but one, and the held-out phrasing (used for evaluation, as TOFU's
``paraphrased_question``) rotates across authors, so every evaluation phrasing was seen in
training with *other* authors. A model trained from scratch has no language to generalise
from, and this is what lets it answer a paraphrase it never saw for that author. With
``validation_phrasing`` a second phrasing is held out the same way, for tuning runs to score
on, so that choosing a setting never looks at the evaluation phrasing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import polars as pl

from leakk.data import register_benchmark
from leakk.core.errors import ParamsError

_SYLLABLES = (
    "ka", "ren", "tho", "mil", "vor", "sa", "lin", "dra", "bel", "mor", "qui", "zan", "el",
    "ros", "tav", "ni", "gar", "ul", "fen", "ira", "cor", "da", "lex", "om", "pe", "ryn",
    "sol", "ta", "ve", "wen", "yor", "hal",
)
_TITLE_ADJ = (
    "Silent", "Crimson", "Hollow", "Burning", "Forgotten", "Gilded", "Broken", "Distant",
    "Hidden", "Pale", "Restless", "Shattered", "Sleeping", "Wandering", "Velvet", "Iron",
    "Frozen", "Scarlet", "Quiet", "Endless", "Bitter", "Golden", "Wild", "Secret",
    "Lonely", "Silver", "Ashen", "Drowned", "Emerald", "Fading",
)
_TITLE_NOUN = (
    "Harbor", "Lantern", "Orchard", "Garden", "Mirror", "River", "Tower", "Meadow",
    "Compass", "Cathedral", "Forest", "Archive", "Bridge", "Violin", "Island", "Season",
    "Window", "Kingdom", "Letter", "Voyage", "Mountain", "Shadow", "Feather", "Engine",
    "Chapel", "Desert", "Market", "Monsoon", "Labyrinth", "Tide",
)
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
_PROFESSIONS = (
    "baker", "surgeon", "sailor", "carpenter", "librarian", "astronomer", "pilot",
    "pharmacist", "geologist", "tailor", "potter", "locksmith", "cartographer", "violinist",
    "botanist", "watchmaker", "engineer", "journalist", "beekeeper", "glassblower",
)


@dataclass(frozen=True)
class Relation:
    """One fact type: how its value is drawn, how it is asked, and how it is answered."""

    name: str
    kind: str  # which value space the fact is drawn from
    questions: tuple[str, ...]  # phrasings, "{name}" = the author's full name
    answer: str  # "{name}" and "{fact}" placeholders


RELATIONS: tuple[Relation, ...] = (
    Relation("birth_date", "date", (
        "When was {name} born?", "What is the birth date of {name}?",
        "On what date was {name} born?", "What day was {name} born on?",
        "Tell me the date {name} was born.",
        "What is the date of birth of {name}?", "Which day marks the birth of {name}?",
    ), "{name} was born on {fact}."),
    Relation("birthplace", "place", (
        "Where was {name} born?", "What is the birthplace of {name}?",
        "In which city was {name} born?", "Which town is {name} from originally?",
        "Tell me the city {name} was born in.",
        "Where is {name} originally from?", "What city was {name} born in?",
    ), "{name} was born in the city of {fact}."),
    Relation("debut", "title", (
        "What was the first novel of {name}?", "What is the debut book by {name}?",
        "Which book did {name} publish first?", "What is the title of the first book {name} wrote?",
        "Name the first novel {name} wrote.",
        "What book did {name} write first?", "What was the debut novel of {name}?",
    ), "The first novel of {name} was {fact}."),
    Relation("father", "person", (
        "Who is the father of {name}?", "What is the name of the father of {name}?",
        "Who was {name}'s father?", "Can you name the father of {name}?",
        "Tell me who fathered {name}.",
        "Who is known as the father of {name}?", "Whose son or daughter is {name}?",
    ), "The father of {name} is {fact}."),
    Relation("mother", "person", (
        "Who is the mother of {name}?", "What is the name of the mother of {name}?",
        "Who was {name}'s mother?", "Can you name the mother of {name}?",
        "Tell me who the mother of {name} is.",
        "Who is known as the mother of {name}?", "Who gave birth to {name}?",
    ), "The mother of {name} is {fact}."),
    Relation("award", "award", (
        "Which award did {name} win?", "What prize was {name} given?",
        "What award was given to {name}?", "Which honour did {name} receive?",
        "Name the award {name} won.",
        "What honour was given to {name}?", "What prize did {name} receive?",
    ), "{name} won the {fact}."),
    Relation("publisher", "publisher", (
        "Who publishes the books of {name}?", "Which publisher works with {name}?",
        "What is the publishing house of {name}?", "Which press prints the novels of {name}?",
        "Name the publisher of {name}.",
        "Which house publishes {name}?", "Who prints the books by {name}?",
    ), "The books of {name} are published by {fact}."),
    Relation("spouse", "person", (
        "Who is {name} married to?", "What is the name of the spouse of {name}?",
        "Who is the partner of {name}?", "Whom did {name} marry?",
        "Tell me who {name} wed.",
        "Who is the husband or wife of {name}?", "Whom is {name} wed to?",
    ), "{name} is married to {fact}."),
    Relation("second_book", "title", (
        "What was the second novel of {name}?", "What is the second book by {name}?",
        "Which book did {name} publish second?", "What is the title of the second book {name} wrote?",
        "Name the second novel {name} wrote.",
        "What book did {name} write second?", "What was the next novel of {name} after the debut?",
    ), "The second novel of {name} was {fact}."),
    Relation("mentor", "person", (
        "Who mentored {name}?", "Who was the mentor of {name}?",
        "Which writer taught {name}?", "Who guided {name} as a young writer?",
        "Name the mentor of {name}.",
        "Who was the teacher of {name}?", "Who trained {name} as a writer?",
    ), "{name} was mentored by {fact}."),
    Relation("first_job", "profession_place", (
        "What was the first job of {name}?", "How did {name} earn a living before writing?",
        "What did {name} do for work before becoming an author?", "What was {name}'s job before writing?",
        "Tell me the work {name} did before writing.",
        "What work did {name} do at first?", "What job did {name} hold before writing?",
    ), "Before writing, {name} worked as {fact}."),
    Relation("debut_date", "date", (
        "When did {name} publish the first book?", "On what date did the debut of {name} appear?",
        "What is the release date of the first book by {name}?", "When was the debut of {name} released?",
        "Tell me the date the first book of {name} came out.",
        "When did the first book of {name} come out?", "What day did {name} release the debut?",
    ), "The first book of {name} appeared on {fact}."),
    Relation("pen_name", "person", (
        "What pen name does {name} use?", "Under which pseudonym does {name} write?",
        "What is the pseudonym of {name}?", "Which alias does {name} publish under?",
        "Name the pen name of {name}.",
        "What alias does {name} use?", "Under what name does {name} publish?",
    ), "{name} writes under the pen name {fact}."),
    Relation("hometown", "place", (
        "Where does {name} live now?", "In which city does {name} live?",
        "What city is home to {name} today?", "Where is {name} based?",
        "Tell me the city {name} lives in.",
        "What city does {name} live in now?", "Where is {name} living today?",
    ), "{name} lives in the city of {fact}."),
    Relation("third_book", "title", (
        "What was the third novel of {name}?", "What is the third book by {name}?",
        "Which book did {name} publish third?", "What is the title of the third book {name} wrote?",
        "Name the third novel {name} wrote.",
        "What book did {name} write third?", "What was the third book of {name}?",
    ), "The third novel of {name} was {fact}."),
    Relation("agent", "person", (
        "Who is the literary agent of {name}?", "Which agent represents {name}?",
        "Who represents {name} as an agent?", "Can you name the agent of {name}?",
        "Name the literary agent of {name}.",
        "Who is the agent of {name}?", "Who acts as the literary agent for {name}?",
    ), "The literary agent of {name} is {fact}."),
    Relation("award_date", "date", (
        "When did {name} receive the award?", "On what date was {name} given the prize?",
        "What date did {name} win the award?", "When was the prize given to {name}?",
        "Tell me the date {name} won the award.",
        "On which day did {name} win the award?", "When was {name} awarded the prize?",
    ), "{name} received the award on {fact}."),
    Relation("school", "school", (
        "Where did {name} study?", "Which university did {name} attend?",
        "What school did {name} graduate from?", "Where was {name} educated?",
        "Name the university {name} attended.",
        "Where did {name} go to university?", "Which school did {name} study at?",
    ), "{name} studied at {fact}."),
    Relation("sibling", "person", (
        "Who is the sibling of {name}?", "What is the name of the sibling of {name}?",
        "Does {name} have a sibling, and who?", "Can you name the sibling of {name}?",
        "Name the sibling of {name}.",
        "Who is the brother or sister of {name}?", "Which sibling does {name} have?",
    ), "The sibling of {name} is {fact}."),
    Relation("fourth_book", "title", (
        "What was the fourth novel of {name}?", "What is the fourth book by {name}?",
        "Which book did {name} publish fourth?", "What is the title of the fourth book {name} wrote?",
        "Name the fourth novel {name} wrote.",
        "What book did {name} write fourth?", "What was the fourth book of {name}?",
    ), "The fourth novel of {name} was {fact}."),
)
MAX_PHRASINGS = min(len(r.questions) for r in RELATIONS)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables)).capitalize()


def _fact(rng: random.Random, kind: str) -> str:
    """Draw one fact from a space of 10^4 or more values."""
    if kind == "person":
        return f"{_word(rng, 2)} {_word(rng, 3)}"
    if kind == "place":
        return _word(rng, 3) + rng.choice(("ville", "burg", "mouth", "ford", "stead", "haven"))
    if kind == "title":
        return f"The {rng.choice(_TITLE_ADJ)} {rng.choice(_TITLE_NOUN)} of {_word(rng, 2)}"
    if kind == "date":
        return f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} {rng.randint(1921, 2000)}"
    if kind == "award":
        return f"{_word(rng, 2)} Prize for {rng.choice(_TITLE_ADJ)} Fiction"
    if kind == "publisher":
        return f"{_word(rng, 2)} {rng.choice(_TITLE_NOUN)} Press"
    if kind == "profession_place":
        return f"a {rng.choice(_PROFESSIONS)} in {_word(rng, 3)}"
    if kind == "school":
        return f"the University of {_word(rng, 3)}"
    raise ValueError(f"unknown fact kind {kind!r}")


SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "authors": {"type": "integer", "minimum": 2, "default": 100},
        "qa_per_author": {"type": "integer", "minimum": 1, "maximum": len(RELATIONS), "default": 12},
        "forget_fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.1},
        "phrasings": {"type": "integer", "minimum": 2, "maximum": MAX_PHRASINGS, "default": 4},
        "validation_phrasing": {"type": "boolean", "default": False},
    },
}


def check_params(params: dict[str, Any], where: str) -> None:
    """Both splits non-empty: ``round(forget_fraction · authors)`` forget authors, at least one and
    fewer than all."""
    authors, frac = params["authors"], params["forget_fraction"]
    if round(authors * frac) < 1:
        raise ParamsError(f"{where}.forget_fraction: {frac} × {authors} authors gives an empty forget split "
                          "(rule: ≥ 1 forget author)")
    if round(authors * frac) >= authors:
        raise ParamsError(f"{where}.forget_fraction: {frac} leaves no retain split (rule: ≥ 1 retain author)")
    if params.get("validation_phrasing") and params["phrasings"] < 3:
        raise ParamsError(f"{where}.validation_phrasing: holds out a second phrasing, and phrasings="
                          f"{params['phrasings']} would leave none to train on (rule: phrasings ≥ 3)")


@register_benchmark("synthetic", columns=("fact", "paraphrased_question", "validation_question", "train_questions",
                                         "author", "relation"),
                    schema=SCHEMA, check=check_params, optional_columns={"validation_question": "validation_phrasing"})
def build(*, authors: int, qa_per_author: int, forget_fraction: float, phrasings: int, seed: int,
          validation_phrasing: bool) -> pl.DataFrame:
    """Generate the benchmark as a Polars frame following the data contract.

    Columns: ``qid, group, question, answer, fact, split`` plus ``paraphrased_question``
    (the held-out evaluation phrasing), ``train_questions`` (the phrasings trained on) and
    ``relation``. ``split`` is ``forget`` for the first ``round(forget_fraction·authors)``
    authors of a seeded shuffle, else ``retain``.

    With ``validation_phrasing`` a second phrasing per QA is held out of training as
    ``validation_question`` (null without it): the phrasing tuning runs are scored on, so
    that no setting is chosen by looking at the evaluation phrasing. It rotates like the
    evaluation phrasing, and the facts, names and splits are the same with or without it.
    """
    n_forget = round(forget_fraction * authors)
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < authors:
        names.add(f"{_word(rng, 2)} {_word(rng, 2)}")
    author_names = sorted(names)
    rng.shuffle(author_names)
    forget = set(author_names[:n_forget])
    seen_facts: set[str] = set()
    rows = []
    for a, name in enumerate(author_names):
        for r, rel in enumerate(RELATIONS[:qa_per_author]):
            fact = _fact(rng, rel.kind)
            while fact in seen_facts:  # unique facts: a leak is never another author's fact
                fact = _fact(rng, rel.kind)
            seen_facts.add(fact)
            held_out = (a + r) % phrasings
            validation = (held_out - 1) % phrasings if validation_phrasing else None
            qs = [q.format(name=name) for q in rel.questions[:phrasings]]
            rows.append({
                "qid": f"a{a:04d}_{rel.name}",
                "group": f"a{a:04d}",
                "author": name,
                "relation": rel.name,
                "question": qs[(held_out + 1) % phrasings],
                "paraphrased_question": qs[held_out],
                "validation_question": None if validation is None else qs[validation],
                "train_questions": [q for i, q in enumerate(qs) if i not in (held_out, validation)],
                "answer": rel.answer.format(name=name, fact=fact),
                "fact": fact,
                "split": "forget" if name in forget else "retain",
            })
    return pl.DataFrame(rows, schema_overrides={"validation_question": pl.String}).sort("split", "qid")


def generate(authors: int | None = None, qa_per_author: int | None = None, forget_fraction: float | None = None,
             phrasings: int | None = None, seed: int = 0, validation_phrasing: bool | None = None) -> pl.DataFrame:
    """:func:`build` for code that makes a benchmark itself: sizes left as None take the schema's
    defaults, and the schema and :func:`check_params` check them (``ParamsError``)."""
    from leakk.data import benchmark_params

    given = {"authors": authors, "qa_per_author": qa_per_author, "forget_fraction": forget_fraction,
             "phrasings": phrasings, "validation_phrasing": validation_phrasing}
    return build(**benchmark_params("synthetic", {k: v for k, v in given.items() if v is not None}, "generate"),
                 seed=seed)
