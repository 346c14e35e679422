"""Data curation: turn piles of web images into a person-centric pretraining set (the Humans-1B recipe).

Sources (folders, globs, list files, tar shards) flow through stages in order: decode + size filter,
prominent-person detection, CLIP scores (realism, text overlay, aesthetics), head pose (optional), perceptual
hash, image embeddings, dedup (pHash radius, then deep-feature neighbours), (hierarchical) embedding clustering
with balanced sampling. The local engine (or the Ray engine, `ray_engine`: the same stages as a Ray Data job)
writes one Parquet part per batch and stage (so a rerun, with either engine, recomputes nothing already
written), a Parquet manifest with one row per input, WebDataset tar shards of the kept images that
`sapiens2 pretrain` streams, and an HTML report.

Nothing is imported here, so `sapiens2 --help` stays light: use the submodules (`sapiens2.curate.engine`).
"""
