"""Model preparation: the embedded default model (converted once from a PyPI package) and model inspection.

Kept free of imports so that ``import cml.models`` stays cheap; torch and transformers load on first use.
"""
