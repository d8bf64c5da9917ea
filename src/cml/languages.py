"""Canonical language identities.

A language variety is an ISO 639-3 code plus an ISO 15924 script when the script is not the language's
usual one: ``deu``, ``arb``, ``arb_Latn``, ``cmn_Hant``, ``ace_Arab``. Inputs may be ISO 639-1 (``de``),
ISO 639-3 (``deu``), FLORES-200 (``deu_Latn``), BCP-47-like tags (``zh-TW``, ``pt-BR``), UD treebank
codes and names (``de_pud``, ``UD_German-PUD``) or English language names (``German``).

Two rules, both from CLDR (through ``langcodes``), so they are consistent rather than a hand list:

* Macrolanguages resolve to CLDR's dominant individual language: ``ar``/``ara`` -> ``arb``,
  ``zh``/``zho`` -> ``cmn``, ``ms``/``msa`` -> ``zsm``, ``fa`` -> ``pes``, ``sw`` -> ``swh``,
  ``et`` -> ``ekk``; one with two listed members stays itself (``no`` -> ``nor``). URIEL keys on individual
  languages, so this is what typology needs. An extended language subtag names the language itself
  (``zh-yue`` is Cantonese, ``yue``; ``ar-arz`` is Egyptian Arabic, ``arz``).
* The script is dropped when it is the language's likely script (``deu_Latn`` -> ``deu``,
  ``zho_Hans`` -> ``cmn``) and kept otherwise (``zho_Hant`` -> ``cmn_Hant``, ``zh-TW`` -> ``cmn_Hant``).
  Regions only matter through the script they imply; ``pt-BR`` and ``pt-PT`` are both ``por``.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

import langcodes
from langcodes import data_dicts

from .errors import CMLError


def _dominant_individuals() -> dict[str, str]:
    """{macrolanguage ISO 639-3: dominant individual language}, inverted from CLDR's normalisation table.

    Kept: macrolanguages with exactly one individual ISO 639-3 member listed. CLDR's table also names
    2-letter collective codes and, for Akan and Mandingo, two members; those macrolanguages stay as they
    are, so Akan stays ``aka`` and Bhojpuri ``bho`` as in FLORES-200.
    """
    members: dict[str, list[str]] = {}
    for individual, macro in data_dicts.NORMALIZED_MACROLANGUAGES.items():
        members.setdefault(langcodes.Language.get(macro, normalize=False).to_alpha3(), []).append(individual)
    return {macro: found[0] for macro, found in members.items() if len(found) == 1 and len(found[0]) == 3}


_DOMINANT_INDIVIDUAL = _dominant_individuals()
_UD_TREEBANK = re.compile(r"^UD_(?P<name>[A-Za-z_ ]+?)(?:-[A-Za-z0-9]+)?$")
_UD_CODE = re.compile(r"^(?P<code>[a-z]{2,3})_[a-z]+$")


@dataclass(frozen=True, order=True)
class Language:
    """A canonical language variety. ``str(lang)`` is its code, e.g. ``arb`` or ``cmn_Hant``."""

    iso639_3: str
    script: str | None = None

    @property
    def code(self) -> str:
        return f"{self.iso639_3}_{self.script}" if self.script else self.iso639_3

    @property
    def name(self) -> str:
        return _tag(self).display_name()

    @property
    def full_script(self) -> str:
        """The script, explicit or likely (``Latn`` for ``deu``)."""
        return self.script or _likely_script(self.iso639_3)

    def __str__(self) -> str:
        return self.code


def _tag(lang: Language) -> langcodes.Language:
    return langcodes.Language.get(lang.iso639_3 if not lang.script else f"{lang.iso639_3}-{lang.script}")


@functools.lru_cache(maxsize=None)
def _likely_script(iso639_3: str) -> str | None:
    return langcodes.Language.get(iso639_3).maximize().script


@functools.lru_cache(maxsize=4096)
def _parse(code: str) -> Language:
    raw = code.strip()
    if not raw:
        raise CMLError("empty language code")
    if not raw.isprintable() or len(raw) > 100:
        raise CMLError(f"unknown language code {code[:100]!r}")
    tag = _parse_tag(raw)
    if tag is None or not tag.language or tag.language in ("und", "mul", "zxx"):
        raise CMLError(f"unknown language code {code!r}{_suggestions(raw)}")
    try:
        alpha3 = _extended_language(tag) or tag.to_alpha3()
    except LookupError:
        raise CMLError(f"unknown language code {code!r}{_suggestions(raw)}") from None
    alpha3 = _DOMINANT_INDIVIDUAL.get(alpha3, alpha3)
    if not _is_known(alpha3):
        raise CMLError(f"unknown language code {code!r}{_suggestions(raw)}")
    script = tag.script or (langcodes.Language.get(f"{alpha3}-{tag.territory}").maximize().script
                            if tag.territory else None)
    if _UMBRELLA_SCRIPT.get(script, script) == _likely_script(alpha3):
        script = None
    return Language(alpha3, script)


def _extended_language(tag: langcodes.Language) -> str | None:
    """BCP-47: in ``zh-yue`` the extended subtag is the language itself (Cantonese), a member of the ``zh``
    macrolanguage; ``sgn-ase`` is American Sign Language. A subtag that is no such member (``de-pud``, a UD
    treebank) is no extended language."""
    extended = tag.extlangs[0] if tag.extlangs else None
    if extended and (tag.language == "sgn" or
                     data_dicts.MACROLANGUAGES.get(extended) == tag.language or
                     data_dicts.NORMALIZED_MACROLANGUAGES.get(extended) == tag.language):
        return langcodes.Language.get(extended, normalize=False).to_alpha3()
    return None


# CLDR's likely script of Korean is Kore (Hangul and Han); FLORES-200 (SIB-200) tags Korean Hang. Without this,
# SIB-200's kor_Hang and PUD's or a language detector's kor would be two languages. langcodes has no such mapping.
_UMBRELLA_SCRIPT = {"Hang": "Kore"}


def _is_known(alpha3: str) -> bool:
    return not langcodes.Language.get(alpha3).display_name().startswith("Unknown language")


def _parse_tag(raw: str) -> langcodes.Language | None:
    ud = _UD_TREEBANK.match(raw)
    if ud:
        return _find_name(ud.group("name").replace("_", " "))
    ud_code = _UD_CODE.match(raw)
    if ud_code and len(raw.split("_")[1]) > 4:  # `de_pud`, `en_ewt`: treebank suffix, not a script
        raw = ud_code.group("code")
    # normalize=False: langcodes would otherwise apply CLDR replacements that merge varieties FLORES-200
    # keeps apart (Dari `prs` -> Persian, Tagalog `tgl` -> Filipino).
    try:
        tag = langcodes.Language.get(raw.replace("_", "-"), normalize=False)
        if tag.language and _is_known(tag.to_alpha3()):
            return tag
    except (langcodes.LanguageTagError, ValueError, LookupError):
        pass
    return _find_name(raw)


def _find_name(name: str) -> langcodes.Language | None:
    """The language with exactly this name (in any language, case and accents aside). langcodes would also
    take a name with extra letters (``germanx`` for German, ``klingonx`` for Klingon): a typo must be an error
    with suggestions, not another language."""
    from language_data import names

    code = names.name_to_code("language", name)  # loads the name trie
    if code is None or names.normalize_name(name) not in names.TRIES["und/name_to_language"]:
        return None
    return langcodes.Language.get(code)


@functools.lru_cache(maxsize=1)
def _known_codes() -> list[str]:
    codes = set(data_dicts.LANGUAGE_ALPHA3) | set(data_dicts.LANGUAGE_ALPHA3.values())
    return sorted(codes)


@functools.lru_cache(maxsize=1)
def _english_names() -> list[str]:
    from language_data import names

    names.name_to_code("language", "English", "en")  # loads the English name trie
    return list(names.TRIES["en/name_to_language"].keys())


def _suggestions(raw: str) -> str:
    """Close codes, or close English names for something longer than a code (``germanx``: German)."""
    stem = raw.lower().split("_")[0].split("-")[0]
    close = difflib.get_close_matches(stem, _known_codes(), n=4, cutoff=0.6) if len(stem) <= 4 else []
    if len(stem) >= 4:
        from language_data import names

        found = difflib.get_close_matches(stem, _english_names(), n=3, cutoff=0.75)
        codes = [names.name_to_code("language", name, "en") for name in found]
        close += [alpha3 for alpha3 in dict.fromkeys(langcodes.Language.get(c).to_alpha3() for c in codes if c)
                  if alpha3 not in close]
    if not close:
        return ""
    named = ", ".join(f"{c} ({langcodes.Language.get(c).display_name()})" for c in close)
    return f"; did you mean: {named}?"


def parse_language(code: str | Language) -> Language:
    """Resolve any supported code to its canonical :class:`Language`; raise :class:`CMLError` if unknown."""
    if isinstance(code, Language):
        return code
    return _parse(str(code))


def canonical(code: str | Language) -> str:
    """The canonical code string, e.g. ``canonical("zh-TW") == "cmn_Hant"``."""
    return parse_language(code).code


def macrolanguage(lang: Language) -> str | None:
    """The ISO 639-3 macrolanguage that contains ``lang`` (``arb`` -> ``ara``), if any."""
    # CLDR keys a member by its 2-letter code where it has one (`nb` for `nob`, `id` for `ind`).
    keys = (lang.iso639_3, langcodes.Language.get(lang.iso639_3).language)
    macro = next((table[k] for k in keys for table in (data_dicts.MACROLANGUAGES,
                                                         data_dicts.NORMALIZED_MACROLANGUAGES) if k in table), None)
    if macro is None:
        return None
    return langcodes.Language.get(macro).to_alpha3()
