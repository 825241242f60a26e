#!/usr/bin/env python
"""The console command `kungfu-ablation` (agent/commands/ablation.py); --help lists its options."""

import sys

from agent.commands.ablation import main

if __name__ == "__main__":
    sys.exit(main())
