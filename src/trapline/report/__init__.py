"""Reports: one self-contained HTML page and its SVG charts, each with a JSON twin."""
