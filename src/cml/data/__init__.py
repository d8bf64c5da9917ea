"""Multilingual task data: examples, readers for many layouts, and CML streams."""
