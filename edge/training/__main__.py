import sys

from edge.training.cli import main

sys.exit(main())
