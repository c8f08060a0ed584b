"""Small, dependency-light helpers shared by every package of the suite."""
