"""Raw review text -> words, split the way ASTE-Data-V2 is (Penn-Treebank-like).

Words are runs of letters/digits (Unicode-aware; inner ``-`` and ``.`` kept, so ``3.5`` and
``well-done`` stay whole); every other non-space character is its own token; the clitics
``n't``, ``'s``, ``'re``, ``'ve``, ``'ll``, ``'d``, ``'m`` split off (``don't`` -> ``do n't``,
``it's`` -> ``it 's``), as in the corpus. Text is NFC-normalised first so that a composed and a
decomposed accent give the same word.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["tokenize"]

TOKEN = re.compile(
    r"\w+(?=n't\b)"                     # "do" of "don't"
    r"|n't\b"                           # the negation clitic
    r"|'(?:s|re|ve|ll|d|m)\b"           # other clitics
    r"|\w+(?:[-.]\w+)*"                 # words, numbers, hyphenated words
    r"|[^\w\s]",                        # punctuation, one character each
    re.IGNORECASE,
)


def tokenize(text: str) -> list[str]:
    """The words of ``text`` (see the module docstring); empty for blank text."""
    return TOKEN.findall(unicodedata.normalize("NFC", text))
