"""End to end: the CLI in subprocesses, multi-node clusters, killed processes, the demo."""
