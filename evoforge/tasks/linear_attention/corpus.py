"""A small English corpus generated offline: short stories from templates and word lists written for this task.

Deterministic for a given seed (Python's `random.Random` is the same on every platform), so every machine
trains on the same bytes and nothing is downloaded. Each story introduces characters, objects and places and
refers back to them later ("Where was the red kite? It was under the bridge."), so the text rewards both
local fluency and recall over a few hundred characters — the two things token mixers trade off.
"""

from __future__ import annotations

import random

# fmt: off
NAMES = (
    "Mira", "Tomas", "Ada", "Leo", "Nina", "Omar", "Ivy", "Ravi", "Lena", "Hugo", "Zara", "Felix", "Iris",
    "Jonah", "Maya", "Otto", "Ruth", "Sami", "Tess", "Yuki", "Bram", "Cleo", "Dara", "Emil", "Freya", "Gus",
    "Hana", "Ines", "Kai", "Lars", "Mona", "Nico", "Pia", "Quinn", "Rosa", "Theo", "Una", "Vera", "Wren",
    "Xavi"
)
ANIMALS = ("cat", "dog", "fox", "owl", "hare", "goat", "duck", "mouse", "horse", "bear", "crow", "frog")
COLOURS = (
    "red", "blue", "green", "yellow", "small", "old", "shiny", "wooden", "silver", "striped", "tiny",
    "heavy"
)
OBJECTS = (
    "kite", "lamp", "book", "key", "ball", "hat", "cup", "map", "drum", "coin", "box", "shell", "boat",
    "bell"
)
PLACES = (
    "under the bridge", "behind the barn", "in the garden", "near the river", "on the hill",
    "inside the cave", "by the old mill", "at the market", "in the kitchen", "on the roof", "under the bed",
    "beside the well",
)
WEATHER = (
    "the sun was warm", "rain tapped on the windows", "the wind was loud", "snow covered the fields",
    "fog hid the hills",
)
FEELINGS = ("happy", "sad", "curious", "tired", "brave", "worried", "excited", "calm")
VERBS_FIND = ("found", "spotted", "noticed", "discovered")
VERBS_LOSE = ("lost", "forgot", "dropped", "left")
# fmt: on

def _story(rng: random.Random) -> str:
    hero, friend = rng.sample(NAMES, 2)
    pet = rng.choice(ANIMALS)
    items = rng.sample(OBJECTS, 3)
    colours = rng.sample(COLOURS, 3)
    places = rng.sample(PLACES, 4)
    things = [f"{c} {o}" for c, o in zip(colours, items, strict=True)]
    hidden = {thing: place for thing, place in zip(things, places, strict=False)}
    lines = [
        f"Once upon a time there was a {rng.choice(FEELINGS)} child named {hero}.",
        f"{hero} had a {pet} and a {things[0]}.",
        f"One morning {rng.choice(WEATHER)}, and {hero} went to see {friend}.",
        f"{friend} had a {things[1]} and a {things[2]}.",
    ]
    for thing, place in hidden.items():
        owner = hero if thing == things[0] else friend
        lines.append(f"Later {owner} {rng.choice(VERBS_LOSE)} the {thing} {place}.")
    lines.append(f"The {pet} felt {rng.choice(FEELINGS)} and ran {places[3]}.")
    questions = list(hidden.items())
    rng.shuffle(questions)
    for thing, place in questions:
        finder = rng.choice((hero, friend, f"the {pet}"))
        lines.append(f"Where was the {thing}? It was {place}.")
        lines.append(f"{finder[0].upper() + finder[1:]} {rng.choice(VERBS_FIND)} it there.")
    lines.append(f"In the end {hero} and {friend} were {rng.choice(FEELINGS)}.")
    return " ".join(lines)


def generate_corpus(n_chars: int, seed: int = 0) -> str:
    """At least `n_chars` characters of stories, one per line; same text for the same (n_chars, seed)."""
    if n_chars <= 0:
        raise ValueError(f"n_chars must be positive, got {n_chars!r}")
    rng = random.Random(seed)
    stories: list[str] = []
    total = 0
    while total < n_chars:
        story = _story(rng)
        stories.append(story)
        total += len(story) + 1
    return "\n".join(stories) + "\n"
