#!/usr/bin/env python
"""The console command `kungfu-recon-report` (agent/commands/recon_report.py); --help lists its options."""

import sys

from agent.commands.recon_report import main

if __name__ == "__main__":
    sys.exit(main())
