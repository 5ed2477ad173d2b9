"""The McColo 2008 replay corpus (synthetic, labelled as such in every message)."""
