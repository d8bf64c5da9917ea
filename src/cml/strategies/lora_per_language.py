"""One LoRA module per update language; every other language keeps the previous model."""

from __future__ import annotations

from .modular import ModularStrategy


class LoraPerLanguage(ModularStrategy):
    def assign_groups(self, languages, typology=None):
        return {lang: lang for lang in languages}

    def group_of_new_language(self, lang, languages):
        return lang
