"""Command-line entry points, one module per verb: python -m app.train | evaluate."""
