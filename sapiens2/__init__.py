"""sapiens2: Meta's Sapiens2 human-centric vision transformers, end to end."""

__version__ = "0.1.0"
