import sys

from wattserve.cli import main

sys.exit(main())
