"""A pretraining run for the distributed tests, under torchrun: `fsdp_child.py CONFIG [STATE_OUT]`.

Like `python -m sapiens2.pretrain CONFIG`, and after resuming (before any step) it writes the gathered model and
optimizer state to STATE_OUT (main process), so a test can compare what different process counts restored.
"""

from __future__ import annotations

import sys

import torch

from sapiens2.pretrain.config import load_config
from sapiens2.pretrain.trainer import Pretrainer


def main(config: str, state_out: str | None = None) -> None:
    trainer = Pretrainer(load_config(config))
    try:
        resumed = trainer.resume()
        if state_out and resumed:
            state = trainer.full_state()  # collective under FSDP
            if trainer.rt.is_main:
                torch.save(state, state_out)
        trainer.run(resume=False)
    finally:
        trainer.rt.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
