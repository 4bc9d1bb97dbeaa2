"""Best-of-n selection with a reward model, measured exactly: the estimators (`estimators`), the
synthetic over-optimisation experiment of `bench` (`synthetic`), and `eval --best-of-n` on a user's own
candidate sets (`candidates` reads them, `evaluate` reports)."""
