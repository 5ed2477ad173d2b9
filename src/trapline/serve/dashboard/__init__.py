"""Dashboard pages (Jinja2 templates) and their vendored static assets."""
