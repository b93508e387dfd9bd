import sys

from .make_masks import main

sys.exit(main())
