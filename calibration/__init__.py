"""calibration: building, storing and reading INT8 calibration sets."""
