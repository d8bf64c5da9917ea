"""cml: continual multilingual learning."""

__version__ = "0.1.0"
