"""Reporting results: one writer of markdown / CSV / JSON tables (`tables`) and the plot helpers (`plots`)."""
