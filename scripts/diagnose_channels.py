#!/usr/bin/env python
"""The console command `kungfu-diagnose-channels` (agent/commands/diagnose_channels.py); --help lists its options."""

import sys

from agent.commands.diagnose_channels import main

if __name__ == "__main__":
    sys.exit(main())
