"""One LoRA module on the frozen previous model, trained on all update data, used by every language."""

from __future__ import annotations

from .modular import ModularStrategy


class LoraShared(ModularStrategy):
    uses_typology = False

    def assign_groups(self, languages, typology=None):
        return {lang: "all" for lang in languages}

    def group_of_new_language(self, lang, languages):
        return "all"
