"""`python -m meddistill ...`: the command line, as torchrun starts it
(`torchrun --nproc_per_node N -m meddistill distill ...`)."""

import sys

from meddistill.cli import main

if __name__ == "__main__":
    sys.exit(main())
