"""Storage without orchestration: Delta tables as plain Python, for the serving process and, later, the resources."""
