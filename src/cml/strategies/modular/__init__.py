"""Modular updates: LoRA modules (Hugging Face PEFT) on the frozen previous model, one per group of
languages, with routing by language and an optional validation gate.

The four modular methods differ only in how languages are grouped (``assign_groups``):
``lora_shared`` (one group), ``lora_per_language`` (one group per language), ``laft_uriel`` (URIEL
typology clusters) and ``laft_random`` (random groups of the same sizes). Modules persist across stages:
a later stage continues the modules of the groups that get data and adds modules for new groups.

One module per part, each usable alone:

- :mod:`.groups`: the groups and the URIEL+ typology that places a language among them;
- :mod:`.modules`: the PEFT modules: adding them, which parameters train, what a stage saves;
- :mod:`.routes`: a language's candidate routes after an update, its route without a gate, a new language's;
- :mod:`.gate`: the pick among the candidates on dev, and the gate's record;
- :mod:`.strategy`: :class:`ModularStrategy`, the update and restore that compose them.
"""

from .strategy import ModularStrategy

__all__ = ["ModularStrategy"]
