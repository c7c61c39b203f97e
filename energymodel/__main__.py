import sys

from energymodel.cli import main

sys.exit(main())
