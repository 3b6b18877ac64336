"""The console's static files (static/): HTML, CSS, our ES modules and the vendored libraries."""
