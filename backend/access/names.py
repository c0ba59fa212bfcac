"""Annotator names and tag names: what may be stored and shown as a reviewer's name or a target's tag.

Here, below the annotation database (backend.leakage.annotations), because the login check (auth.py) validates
names on every page, and that should not import SQLAlchemy.
"""
from __future__ import annotations

import re
import unicodedata

MAX_NAME_LENGTH = 64
CONFUSABLE_SCRIPTS = {"CYRILLIC", "GREEK"}  # scripts whose letters pass for Latin ones


class AnnotatorNameError(ValueError):
    """An annotator name that cannot be stored (empty, too long, control characters)."""


def validate_name(name: str) -> str:
    """The name to store: NFC-normalised (the one normalisation: it joins only canonically equivalent spellings,
    an é typed as one code point or as e + accent), surrounding whitespace dropped, everything else kept verbatim.

    Markup, quotes and SQL are legal (names are bound parameters and escaped when shown); empty names,
    control and invisible format characters (zero-width spaces, joiners, direction marks), names over
    MAX_NAME_LENGTH and names mixing Latin with its look-alike scripts (Cyrillic, Greek: "аlice" with a
    Cyrillic а would pass for alice, UTS #39's mixed-script confusables) are not. Neither are names with
    compatibility characters (fullwidth ａｌｉｃｅ, math bold 𝐚𝐥𝐢𝐜𝐞, ligatures): NFKC would fold them onto
    another name, so they are refused rather than folded, and no two distinct names compare equal.
    """
    name = unicodedata.normalize("NFC", name or "").strip()
    if unicodedata.normalize("NFKC", name) != name:
        raise AnnotatorNameError("the annotator name contains compatibility characters (fullwidth or styled letters, "
                                 "ligatures) that pass for plain ones: type it in plain letters")
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


class TagNameError(ValueError):
    """A tag name that cannot be stored; the message says what a tag may hold."""


TAG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:-]{0,62}")


def validate_tag(tag: str) -> str:
    """`tag` itself when it is a tag name: a letter or digit, then up to 62 letters, digits, spaces or _ . : -
    (ASCII only, so no look-alikes, and nothing a spreadsheet or Markdown would run)."""
    if not isinstance(tag, str) or not TAG_NAME.fullmatch(tag):
        shown = repr(tag[:40]) if isinstance(tag, str) else type(tag).__name__
        raise TagNameError(f"tag {shown} is not a tag name: start with a letter or digit, then up to 62 letters, "
                           "digits, spaces or _ . : -")
    return tag
