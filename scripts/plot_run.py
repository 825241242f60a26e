#!/usr/bin/env python
"""The console command `kungfu-plot` (agent/commands/plot.py); --help lists its options."""

import sys

from agent.commands.plot import main

if __name__ == "__main__":
    sys.exit(main())
