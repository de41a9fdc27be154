"""The bottom layer every other layer may use: errors, environment, atomic I/O and the credit metrics."""
