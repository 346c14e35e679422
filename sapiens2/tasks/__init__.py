"""Task predictors: each owns its pre- and post-processing around a network."""
