"""Thin absl-flag binaries (console scripts): parse flags, call the library, print results."""
