"""``python -m theory`` is ``python theory/simulate.py``."""

import sys

from theory.simulate import main

sys.exit(main())
