"""lrservice."""
