"""Conversion to LiteRT/TFLite, and verification of the converted file."""
