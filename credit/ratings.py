"""Credit ratings: letter grades A/B/C/D/X/H or a 1–10 score (DESIGN.md §1)."""

from __future__ import annotations

from enum import StrEnum


class Rating(StrEnum):
    A = "A"  # excellent
    B = "B"  # good
    C = "C"  # fair: normal customers
    D = "D"  # risky
    X = "X"  # not acceptable (dishonoured)
    H = "H"  # blacklist: no credit at all


RATING_MEANING = {
    Rating.A: "excellent",
    Rating.B: "good",
    Rating.C: "fair",
    Rating.D: "risky",
    Rating.X: "not acceptable",
    Rating.H: "blacklist",
}

# 1–10 score scale → the letter grade with the same consequence.
# 1–2 (80–100 points), 3–4 (60–80), 5–6 (40–60): standing limit;
# 7–8 (20–40): per-deal credit only; 9–10 (0–20): blacklist.
_SCORE_TO_LETTER = {
    1: Rating.A,
    2: Rating.A,
    3: Rating.B,
    4: Rating.B,
    5: Rating.C,
    6: Rating.C,
    7: Rating.D,
    8: Rating.D,
    9: Rating.H,
    10: Rating.H,
}


class RatingError(ValueError):
    pass


def parse_rating(text: str | int) -> Rating:
    """Read a letter grade (``"b"`` → B) or a 1–10 score (``"7"`` → D)."""
    raw = str(text).strip().upper()
    if raw.isdigit():
        score = int(raw)
        if score not in _SCORE_TO_LETTER:
            raise RatingError(f"score must be 1-10, got {raw}")
        return _SCORE_TO_LETTER[score]
    try:
        return Rating(raw)
    except ValueError:
        raise RatingError(
            f"rating must be one of A, B, C, D, X, H or a score 1-10, got {text!r}"
        ) from None


def allows_standing_limit(rating: Rating) -> bool:
    """A, B and C carry a standing limit; D is per-deal only; X and H get no credit."""
    return rating in (Rating.A, Rating.B, Rating.C)


def is_blacklist(rating: Rating) -> bool:
    return rating is Rating.H
