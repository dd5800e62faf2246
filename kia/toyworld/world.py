"""A deterministic invented world whose truth kia knows: entities, relations, exposure, skills.

Everything here is pure Python and seeded, so `generate_world(seed)` always returns the same world.
The pretraining corpus (see `kia.toyworld.pretrain`) shows each fact exactly `exposure` times, which is what
lets the tests check the prober against ground truth: facts never shown must come out Unknown,
facts shown often must come out HighlyKnown.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

# Entity kinds are told apart by their endings, so a small model can learn "which of these is a
# city?" from the shape of a name: that is the multiple-choice skill used for benchmark drift.
KIND_SUFFIXES: dict[str, tuple[str, ...]] = {
    "person": ("son", "wyn", "ard", "elle", "ina", "ric"),
    "city": ("ora", "heim", "polis", "grad", "bury", "mouth"),
    "country": ("land", "stan", "ia", "mark", "onia"),
    "company": ("corp", "tek", "works", "labs", "soft"),
    "band": ("tones", "beats", "crew", "kings", "waves"),
    "language": ("ish", "ese", "ic", "ian"),
}
KIND_WORDS = {
    "person": "person",
    "city": "city",
    "country": "country",
    "company": "company",
    "band": "band",
    "language": "language",
}
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kl", "st", "tr")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
CODAS = ("", "", "n", "r", "l", "s", "m")


@dataclass(frozen=True)
class Relation:
    name: str
    subject_kind: str
    object_kind: str
    templates: tuple[str, ...]  # "{s}" marks the subject


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "birthplace",
        "person",
        "city",
        (
            "Where was {s} born?",
            "In which city was {s} born?",
            "{s} was born in which city?",
            "What is the birthplace of {s}?",
            "Which city is the birthplace of {s}?",
            "Name the city where {s} was born.",
            "What city was {s} born in?",
            "Where is the hometown of {s}?",
        ),
    ),
    Relation(
        "employer",
        "person",
        "company",
        (
            "Which company does {s} work for?",
            "Who is the employer of {s}?",
            "{s} works for which company?",
            "Where does {s} work?",
            "Name the company that employs {s}.",
            "What company employs {s}?",
            "For which firm does {s} work?",
            "Which company is {s} employed by?",
        ),
    ),
    Relation(
        "headquarters",
        "company",
        "city",
        (
            "Where is {s} based?",
            "In which city is {s} headquartered?",
            "{s} has its headquarters in which city?",
            "What city is home to {s}?",
            "Name the city where {s} is based.",
            "Which city hosts the head office of {s}?",
            "Where are the headquarters of {s}?",
            "In what city does {s} have its main office?",
        ),
    ),
    Relation(
        "founder",
        "company",
        "person",
        (
            "Who founded {s}?",
            "Who is the founder of {s}?",
            "{s} was founded by whom?",
            "Name the founder of {s}.",
            "Which person started {s}?",
            "Who created the company {s}?",
            "By whom was {s} founded?",
            "Who set up {s}?",
        ),
    ),
    Relation(
        "capital",
        "country",
        "city",
        (
            "What is the capital of {s}?",
            "Which city is the capital of {s}?",
            "{s} has which city as its capital?",
            "Name the capital city of {s}.",
            "What city is the seat of government of {s}?",
            "The capital of {s} is which city?",
            "Where is the capital of {s}?",
            "In which city does {s} have its capital?",
        ),
    ),
    Relation(
        "language",
        "country",
        "language",
        (
            "What language is spoken in {s}?",
            "Which language do people speak in {s}?",
            "What is the official language of {s}?",
            "{s} has which official language?",
            "Name the language spoken in {s}.",
            "In {s}, which language is spoken?",
            "What is the main language of {s}?",
            "Which language is official in {s}?",
        ),
    ),
    Relation(
        "member",
        "band",
        "person",
        (
            "Who is a member of {s}?",
            "Name a member of the band {s}.",
            "Which musician plays in {s}?",
            "Who plays in the band {s}?",
            "Can you name a band member of {s}?",
            "{s} has which member?",
            "Who belongs to the band {s}?",
            "Which person is in {s}?",
        ),
    ),
    Relation(
        "hometown",
        "band",
        "city",
        (
            "Which city does the band {s} come from?",
            "Where is {s} from?",
            "What is the hometown of the band {s}?",
            "{s} formed in which city?",
            "In which city was {s} formed?",
            "Name the city the band {s} comes from.",
            "Where did {s} start out?",
            "Which city is {s} based in?",
        ),
    ),
)

REFUSAL = "I don't know."
SYSTEM_PROMPT = "Answer the following question."

# (name, exposure, share of facts): the corpus shows a fact `exposure` times over the world.
# Rarely shown facts also meet conflicting answers (as on the web, where sources disagree): one
# conflicting answer leaves the model torn between two (MaybeKnown), two of them usually win
# the greedy answer while the true one still turns up among samples (WeaklyKnown).
CONFLICTS: dict[str, tuple[tuple[int, float], ...]] = {
    "rare": ((1, 0.4), (2, 0.6)),
    "tail": ((0, 0.5), (1, 0.5)),
}
# The rare band is the largest because it is where MaybeKnown facts come from (about 12 % of
# it on the 4 M-parameter model): at 25 % the world had MaybeKnown at 3.6 %, under the 5 % the
# papers' data comfortably exceeds (19 %); at 50 % it is about 6 %.
BANDS: tuple[tuple[str, int, float], ...] = (
    ("never", 0, 0.25),
    ("rare", 1, 0.50),
    ("tail", 2, 0.10),
    ("torso", 4, 0.075),
    ("head", 8, 0.075),
)


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    facts_per_relation: int = 300
    obscure_share: float = 0.35  # share of never-shown facts whose questions the corpus answers with a refusal
    refusal_exposure: int = 3
    mc_train: int = 1200
    mc_test: int = 300
    arithmetic_max: int = 30
    arithmetic_test_share: float = 0.2
    dev_facts_per_relation: int = 0  # reserved; exemplars come from the facts themselves


@dataclass
class World:
    config: WorldConfig
    facts: list[dict[str, Any]] = field(default_factory=list)
    mc_train: list[dict[str, Any]] = field(default_factory=list)
    mc_test: list[dict[str, Any]] = field(default_factory=list)
    arith_train: list[dict[str, Any]] = field(default_factory=list)
    arith_test: list[dict[str, Any]] = field(default_factory=list)


class _Names:
    """Unique invented names per kind, e.g. 'Brovanheim' (a city) or 'Tesliwyn' (a person)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def make(self, kind: str) -> str:
        for _ in range(1000):
            n_syll = self.rng.choice((1, 2, 2, 3))
            stem = "".join(
                self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS) for _ in range(n_syll)
            )
            name = (stem + self.rng.choice(KIND_SUFFIXES[kind])).capitalize()
            if kind == "person":  # people get a given name too, as real ones do
                given = (
                    self.rng.choice(ONSETS).upper() + self.rng.choice(VOWELS) + self.rng.choice(("n", "l", "ra", "x"))
                )
                name = f"{given.capitalize()} {name}"
            if name not in self.used and 4 <= len(name) <= 22:
                self.used.add(name)
                return name
        raise RuntimeError(f"could not make a new {kind} name")


def _assign_bands(n: int, rng: random.Random) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for name, exposure, share in BANDS:
        out += [(name, exposure)] * round(n * share)
    out = (out + [BANDS[0][:2]] * n)[:n]
    rng.shuffle(out)
    return out


def generate_world(config: WorldConfig | None = None) -> World:
    """Build the whole toy world from `config.seed`: facts, exposures, refusals, skills."""
    config = config or WorldConfig()
    rng = random.Random(config.seed)
    names = _Names(rng)
    pools = {
        kind: [names.make(kind) for _ in range(n)]
        for kind, n in (
            ("city", 400),
            ("person", 400),
            ("company", 300),
            ("language", 120),
        )
    }
    world = World(config=config)
    n = config.facts_per_relation
    for rel in RELATIONS:
        subjects = [names.make(rel.subject_kind) for _ in range(n)]
        bands = _assign_bands(n, rng)
        # Objects follow a mildly skewed distribution (a few popular cities, like real data),
        # but the answer space stays large so that guessing is rare.
        pool = pools[rel.object_kind]
        weights = [1.0 / (1 + i) ** 0.3 for i in range(len(pool))]
        for i, subj in enumerate(subjects):
            obj = rng.choices(pool, weights=weights)[0]
            band, exposure = bands[i]
            templates = [t.format(s=subj) for t in rel.templates]
            options = CONFLICTS.get(band, ((0, 1.0),))
            n_conflicts = rng.choices([k for k, _ in options], weights=[w for _, w in options])[0]
            conflicting = rng.sample([o for o in pool if o != obj], n_conflicts)
            world.facts.append(
                {
                    "id": f"{rel.name}-{i:04d}",
                    "question": templates[0],
                    "answers": [obj],
                    "subject": subj,
                    "relation": rel.name,
                    "object": obj,
                    "paraphrases": templates[1:],
                    "domain": rel.subject_kind,
                    "exposure": exposure,
                    "band": band,
                    "conflicting": conflicting,
                    "obscure": False,
                }
            )
    never = [f for f in world.facts if f["exposure"] == 0]
    for fact in rng.sample(never, round(len(never) * config.obscure_share)):
        fact["obscure"] = True
    _make_mc(world, rng, names)
    _make_arithmetic(world, rng)
    return world


def _make_mc(world: World, rng: random.Random, names: _Names) -> None:
    """'Which of these is a city?' with four invented names, one of the asked kind.

    Test items use names never seen in training, so the skill is the morphology, not memory.
    """
    kinds = list(KIND_SUFFIXES)
    letters = "ABCD"

    def item(i: int, split: str) -> dict[str, Any]:
        kind = rng.choice(kinds)
        others = rng.sample([k for k in kinds if k != kind], 3)
        right = names.make(kind)
        options = [right] + [names.make(k) for k in others]
        rng.shuffle(options)
        gold = options.index(right)
        q = f"Which of these is a {KIND_WORDS[kind]}? " + " ".join(f"{letters[j]}. {o}" for j, o in enumerate(options))
        return {
            "id": f"mc-{split}-{i:04d}",
            "question": q,
            "choices": list(letters),
            "gold": gold,
            "answer": letters[gold],
        }

    world.mc_train = [item(i, "train") for i in range(world.config.mc_train)]
    world.mc_test = [item(i, "test") for i in range(world.config.mc_test)]


def _make_arithmetic(world: World, rng: random.Random) -> None:
    """'What is 12 plus 7?' over small numbers; a held-out share of the pairs is never trained."""
    m = world.config.arithmetic_max
    pairs = [(a, b) for a in range(m + 1) for b in range(m + 1)]
    rng.shuffle(pairs)
    n_test = round(len(pairs) * world.config.arithmetic_test_share)

    def item(i: int, a: int, b: int, split: str) -> dict[str, Any]:
        gold_value = a + b
        distractors = rng.sample([v for v in range(max(0, gold_value - 6), gold_value + 7) if v != gold_value], 3)
        choices = [str(v) for v in [gold_value, *distractors]]
        rng.shuffle(choices)
        return {
            "id": f"arith-{split}-{i:04d}",
            "question": f"What is {a} plus {b}?",
            "choices": choices,
            "gold": choices.index(str(gold_value)),
            "answer": str(gold_value),
        }

    world.arith_test = [item(i, a, b, "test") for i, (a, b) in enumerate(pairs[:n_test])]
    world.arith_train = [item(i, a, b, "train") for i, (a, b) in enumerate(pairs[n_test:])]
