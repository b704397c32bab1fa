"""What a person reads: the live view, the HTML report, simulate, regression tracking."""
