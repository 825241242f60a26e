#!/usr/bin/env python
"""The console command `kungfu-benchmark` (agent/commands/benchmark.py); --help lists its options."""

import sys

from agent.commands.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
