"""One package name under which every custom layer and model is registered for `.keras` files."""

PACKAGE = "adaptune"
