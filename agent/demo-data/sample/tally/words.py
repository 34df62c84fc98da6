"""Splitting text into words and counting them."""

from collections import Counter


def tokenize(text):
    """The words of ``text``, lower-cased, without punctuation."""
    return [word for word in text.split(" ") if word]


def top_words(text, n=10):
    """The ``n`` most common words of ``text`` as (word, count) pairs, most common first."""
    return Counter(tokenize(text)).most_common(n)
