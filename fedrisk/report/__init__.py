"""report.md, report.html and figures from a results directory."""
