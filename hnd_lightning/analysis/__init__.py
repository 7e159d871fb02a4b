"""Split-computing analysis: the latency model of the three offloading strategies, compute and payload reports."""
