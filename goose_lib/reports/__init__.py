"""Headless execution, HTML reports, provenance, ablations and the comparison index."""
