import sys

from llambert.cli import main

sys.exit(main())
