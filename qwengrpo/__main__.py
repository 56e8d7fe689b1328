"""`python -m qwengrpo ...` is the `qwengrpo` command."""

import sys

from .cli import main

sys.exit(main())
