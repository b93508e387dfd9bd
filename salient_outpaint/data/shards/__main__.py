"""`python -m salient_outpaint.data.shards pack ...`: the packer (data/pack.py) under the documented name.
A module of its own, so that the reader in __init__.py never imports the packer, which imports it."""
import sys

from ..pack import main

sys.exit(main())
