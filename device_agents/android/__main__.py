"""``python -m device_agents.android --config FILE`` (and the archive's entry)."""

import sys

from device_agents.android.agent import main

if __name__ == "__main__":
    sys.exit(main())
