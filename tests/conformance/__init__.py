"""The storage contract suite: every backend must pass every test here."""
