"""Video recommendation (the YouTube recommender), end to end.

    casebook run video-recommendation                      # built-in simulator, about 2 minutes
    casebook run video-recommendation --data movielens:~/data/ml-latest-small
    casebook serve video-recommendation

Candidate generation (popularity, item-kNN, EASE, two-tower, SASRec) -> multi-task ranking with a
position tower -> re-ranking (diversity, freshness, watched/blocked removal), evaluated offline, by
simulated A/B tests and off-policy estimates, and in a multi-round feedback-loop experiment.
"""
