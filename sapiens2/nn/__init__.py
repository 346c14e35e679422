"""Building blocks of the Sapiens2 networks, one per file."""
