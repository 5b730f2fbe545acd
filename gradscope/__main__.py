"""python -m gradscope: the same as the gradscope command."""

import sys

from gradscope.cli import main

sys.exit(main())
