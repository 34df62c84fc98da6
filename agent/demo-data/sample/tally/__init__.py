"""tally: word counts for text files."""

from .words import top_words, tokenize

__all__ = ["tokenize", "top_words"]
