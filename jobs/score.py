"""spark-submit entry point for `ytspark score`: parse arguments and call the library.

    spark-submit --master local[2] jobs/score.py [--profile local] [--set key=value ...]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ytspark.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(command="score"))
