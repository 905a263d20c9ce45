import sys

from berth.entry import main

sys.exit(main())
