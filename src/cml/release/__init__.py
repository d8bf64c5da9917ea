"""Releases: the unit cml ships. ``cml train`` makes the first, ``cml update`` the next from a new batch of
labelled data, ``cml check`` gates it, ``cml export`` hands it to other tools, ``cml predict`` serves it."""
