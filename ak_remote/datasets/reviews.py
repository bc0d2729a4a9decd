"""The bundled `reviews` text set: short synthetic product reviews, the same for the same seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

_PRODUCTS = (
    "blender", "headphones", "backpack", "kettle", "lamp", "keyboard", "jacket", "tent",
    "camera", "toaster", "umbrella", "chair", "mouse", "speaker", "watch", "bottle",
)  # fmt: skip
_WORDS = {
    1: ("terrible", "broken", "useless", "awful", "a waste of money"),
    2: ("disappointing", "flimsy", "mediocre", "not worth it", "poorly made"),
    3: ("okay", "average", "decent enough", "fine for the price", "nothing special"),
    4: ("good", "solid", "well made", "reliable", "a nice surprise"),
    5: ("excellent", "fantastic", "perfect", "brilliant", "the best I have owned"),
}
_CLOSERS = {
    1: ("I returned it.", "Avoid.", "Never again.", "Stopped working in a week."),
    2: ("I expected more.", "Would not buy again.", "It broke quickly."),
    3: ("It does the job.", "Maybe buy it on sale.", "Some good, some bad."),
    4: ("I would recommend it.", "Happy with it.", "Does what it says."),
    5: ("Buy it!", "Love it.", "Five stars from me.", "Highly recommended."),
}
_FILLERS = ("honestly", "overall", "so far", "after a month", "for daily use", "as a gift")


@dataclass(frozen=True)
class Review:
    """One synthetic review: its text, sentiment label and 1-5 star rating."""

    text: str
    sentiment: str  # negative (1-2 stars), neutral (3) or positive (4-5)
    rating: int


def generate_reviews(count: int = 400, seed: int = 20240601) -> list[Review]:
    """The bundled `reviews` set: `count` short reviews, the same for the same seed."""
    rng = random.Random(seed)
    reviews = []
    for _ in range(count):
        rating = rng.randint(1, 5)
        product = rng.choice(_PRODUCTS)
        first, second = rng.sample(_WORDS[rating], 2)
        text = (
            f"The {product} is {first}, {rng.choice(_FILLERS)} {second}. "
            f"{rng.choice(_CLOSERS[rating])}"
        )
        sentiment = "negative" if rating <= 2 else "neutral" if rating == 3 else "positive"
        reviews.append(Review(text, sentiment, rating))
    return reviews
