"""``python -m poncho_wq.worker``: regenerate the worker scripts in poncho_wq/data/ from poncho_wq/worker/."""

import sys

from poncho_wq.worker import main

sys.exit(main())
