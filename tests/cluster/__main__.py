import sys

from tests.cluster.run import main

raise SystemExit(main(sys.argv[1:]))
