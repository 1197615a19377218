"""Datasets: catalog, download, on-disk formats, MindRecord conversion and synthetic data."""
