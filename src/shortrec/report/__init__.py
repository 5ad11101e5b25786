"""The visual report: figures (plots.py), the page (report.py), a browser check (browser.py)."""
