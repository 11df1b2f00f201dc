"""The ETL example: see README.md next to this file."""
