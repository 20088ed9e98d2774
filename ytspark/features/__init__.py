"""Features as of a time: the one implementation prepare, train-ranker rows and serving call; see README.md."""
