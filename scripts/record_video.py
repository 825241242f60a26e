#!/usr/bin/env python
"""The console command `kungfu-record-video` (agent/commands/record_video.py); --help lists its options."""

import sys

from agent.commands.record_video import main

if __name__ == "__main__":
    sys.exit(main())
