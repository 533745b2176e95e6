"""The bottom layer: errors, version, file writes, the native/pure switch, the worker pool."""
