"""The five LivePortrait networks, one file each; shared blocks live in `blocks.py`."""
