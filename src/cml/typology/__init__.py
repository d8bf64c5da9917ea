"""URIEL+ typological distances between languages (:mod:`.uriel`) and groupings built on them (:mod:`.grouping`).

Only constants live here, so that loading the CLI command (:mod:`.command`) does not import numpy or urielplus.
:mod:`.uriel`'s docstring explains the choice of default kinds.
"""

KINDS = ("syntactic", "genetic", "geographic", "phonological", "inventory", "featural")
DEFAULT_KINDS = ("syntactic", "genetic", "geographic")
# Geographic vectors exist for every URIEL language and genetic ones for most, so a pair always has one of these.
FALLBACK_KINDS = ("genetic", "geographic")
