"""Readers and writers of the datasets' real on-disk formats (one module per format).

Parsers report every problem with the file and line it came from and never drop a row silently; the
writers produce files the original tools would read, which is how the synthetic datasets are made.
"""
