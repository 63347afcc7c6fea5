import sys

from hybridrec._entry import main

sys.exit(main())
