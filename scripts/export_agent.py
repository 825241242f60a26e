#!/usr/bin/env python
"""The console command `kungfu-export-agent` (agent/commands/export_agent.py); --help lists its options."""

import sys

from agent.commands.export_agent import main

if __name__ == "__main__":
    sys.exit(main())
