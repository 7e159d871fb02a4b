"""The device client (`python -m hnd_lightning.client`, `loadtest`); imports `common`, never `server`.

transport.py      REST / gRPC connections
link.py           link emulation
device_client.py  the three strategies per image
measure.py        records and summaries
report.py         prediction, table, plot
loadgen.py        concurrent load
"""
