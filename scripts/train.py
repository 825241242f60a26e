#!/usr/bin/env python
"""The console command `kungfu-train` (agent/commands/train.py); --help lists its options."""

import sys

from agent.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
