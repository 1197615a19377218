"""Retrieval core shared by the models: feature store, global search, local-feature retrieval.

NumPy, h5py, OpenCV and faiss only (no MindSpore): networks produce descriptors, this package stores and
searches them.

- :mod:`~geocli.retrieval.store`: HDF5 feature files, incremental and kill-safe
- :mod:`~geocli.retrieval.search`: exact chunked top-k over global descriptors (optional faiss)
- :mod:`~geocli.retrieval.ann`: nearest descriptors: exact chunked NumPy or faiss IVF, saved to a folder
- :mod:`~geocli.retrieval.results`: ranked-pairs text and JSON writers
- :mod:`~geocli.retrieval.local`: DELF-style votes + short-list verification
- :mod:`~geocli.retrieval.verify`: affine RANSAC inlier counting (OpenCV)
- :mod:`~geocli.retrieval.synthetic`: structured synthetic local-feature sets for tests and benchmarks
"""

from geocli.retrieval.ann import DescriptorIndex
from geocli.retrieval.local import LocalIndex, LocalQueryResult
from geocli.retrieval.results import write_ranked_pairs, write_results_json
from geocli.retrieval.search import SearchResult, topk_search
from geocli.retrieval.store import FeatureStore

__all__ = [
    "DescriptorIndex",
    "FeatureStore",
    "LocalIndex",
    "LocalQueryResult",
    "SearchResult",
    "topk_search",
    "write_ranked_pairs",
    "write_results_json",
]
