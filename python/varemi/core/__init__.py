"""The array kernels (native and their pure-Python twins), conditioning bins, windows, split."""
