"""Valence and arousal: the features, the heuristic, label CSVs."""
