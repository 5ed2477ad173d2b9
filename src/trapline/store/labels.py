"""Message labels: what a message is (spam, ham or a name the user chose), given at ingest.

Research corpora mix spam and ham, so every analysis and report counts one label (``spam`` by
default) unless asked for another or for ``all``. Labels are validated to a small alphabet here,
which is what makes it safe to spell them into SQL as literals.
"""

from __future__ import annotations

import re
from pathlib import PurePath

from trapline.errors import UsageError

SPAM = "spam"
ALL = "all"  # not a label: "every message, whatever its label" in reports
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
# Folder or file names that usually hold legitimate mail (SpamAssassin's easy_ham/hard_ham,
# "ham", "legit"): worth a hint, never a silent guess.
_HAMMY = re.compile(r"(^|[^a-z])(ham|legit|nonspam|non-spam)([^a-z]|$)")


def check_label(text: str, *, allow_all: bool = False) -> str:
    """``text`` as a label (lowercased), or a UsageError saying which labels are valid."""
    label = text.strip().lower()
    if label == ALL and allow_all:
        return label
    if label == ALL or not _NAME.fullmatch(label):
        extra = ", or all" if allow_all else ""
        raise UsageError(
            f"--label {text!r} is not a label; use spam, ham or a name of up to 32 lowercase "
            f"letters, digits, '.', '_' or '-'{extra}"
        )
    return label


def label_filter(label: str, column: str = "label") -> str:
    """A SQL condition selecting ``label`` (``TRUE`` for all); ``label`` must be checked."""
    if label == ALL:
        return "TRUE"
    check_label(label)
    return f"{column} = '{label}'"


def looks_like_ham(path: str) -> bool:
    """Whether a path's folder or file names suggest legitimate mail (easy_ham/, ham.mbox)."""
    return any(_HAMMY.search(part.lower()) for part in PurePath(path).parts)
