"""`python -m sapiens2.train CONFIG` / `torchrun --nproc_per_node N -m sapiens2.train CONFIG`."""

import sys

from sapiens2.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
