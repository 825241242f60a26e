#!/usr/bin/env python
"""The console command `kungfu-evaluate` (agent/commands/evaluate.py); --help lists its options."""

import sys

from agent.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
