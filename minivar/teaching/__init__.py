"""What the notebooks use and nothing else does: exercise checkers and shared notebook set-ups."""
