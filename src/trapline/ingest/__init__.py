"""Read raw mail from sources and turn bytes into typed records (pure parsing stages)."""
