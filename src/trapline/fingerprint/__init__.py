"""Near-duplicate signatures: MinHash over normalised text, URL-template and subject templates."""
