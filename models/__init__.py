"""Classification models: numpy/torch only, no I/O beyond load and save."""
