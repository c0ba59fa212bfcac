"""Annotator names: what may be stored and shown as a reviewer's name.

Apart from the annotation database because the login check (backend/access/auth.py) validates names on
every page, and that should not import SQLAlchemy.
"""
from __future__ import annotations

import unicodedata

MAX_NAME_LENGTH = 64
CONFUSABLE_SCRIPTS = {"CYRILLIC", "GREEK"}  # scripts whose letters pass for Latin ones


class AnnotatorNameError(ValueError):
    """An annotator name that cannot be stored (empty, too long, control characters)."""


def validate_name(name: str) -> str:
    """The name to store: NFKC-normalised (fullwidth and other compatibility forms fold to one spelling),
    surrounding whitespace dropped, everything else kept verbatim.

    Markup, quotes and SQL are legal (names are bound parameters and escaped when shown); empty names,
    control and invisible format characters (zero-width spaces, joiners, direction marks), names over
    MAX_NAME_LENGTH and names mixing Latin with its look-alike scripts (Cyrillic, Greek: "аlice" with a
    Cyrillic а would pass for alice, UTS #39's mixed-script confusables) are not.
    """
    name = unicodedata.normalize("NFKC", name or "").strip()
    if any(unicodedata.category(ch) == "Cf" for ch in name):
        raise AnnotatorNameError("the annotator name contains invisible characters (zero-width spaces, direction "
                                 "marks): type it again without them")
    if not name:
        raise AnnotatorNameError("the annotator name is empty: type a name, e.g. your initials")
    if len(name) > MAX_NAME_LENGTH:
        raise AnnotatorNameError(f"the annotator name has {len(name)} characters: use at most {MAX_NAME_LENGTH}")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise AnnotatorNameError("the annotator name contains control characters (tabs, newlines): type it on one line")
    scripts = {unicodedata.name(ch, "").split(" ")[0] for ch in name if ch.isalpha()}
    if "LATIN" in scripts and scripts & CONFUSABLE_SCRIPTS:
        raise AnnotatorNameError("the annotator name mixes Latin letters with look-alike Cyrillic or Greek ones: "
                                 "type it in one script")
    return name
