"""The prepare stage; see README.md in this folder."""
from ytspark.prepare.job import RawTables, load_manifest, read_inputs, run_prepare

__all__ = ["RawTables", "load_manifest", "read_inputs", "run_prepare"]
