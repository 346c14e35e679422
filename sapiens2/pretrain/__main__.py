import sys

from sapiens2.pretrain.cli import main

sys.exit(main())
