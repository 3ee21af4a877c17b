"""How messages count things: `1 image`, `2 images`."""


def plural(count: float, noun: str, nouns: str | None = None) -> str:
    """`count` and the noun in its number; `nouns` where adding an s is wrong."""
    number = count if isinstance(count, int) else f"{count:g}"
    return f"{number} {noun if count == 1 else nouns or noun + 's'}"
