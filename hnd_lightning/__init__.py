"""hnd-lightning: Head Network Distillation for split computing."""

__version__ = "0.1.0"
