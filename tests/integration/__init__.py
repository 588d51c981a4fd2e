"""Integration tests against a real ComfyUI (a package so its conftest does not shadow tests/conftest)."""
