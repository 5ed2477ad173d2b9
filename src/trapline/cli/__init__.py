"""The ``trapline`` command line: thin Click commands over library functions."""
