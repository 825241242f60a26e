#!/usr/bin/env python
"""The console command `kungfu-knife-report` (agent/commands/knife_report.py); --help lists its options."""

import sys

from agent.commands.knife_report import main

if __name__ == "__main__":
    sys.exit(main())
