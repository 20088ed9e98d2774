"""The prepare stage; see README.md in this folder."""
from ytspark.prepare.job import RawTables, read_inputs, run_prepare

__all__ = ["RawTables", "read_inputs", "run_prepare"]
