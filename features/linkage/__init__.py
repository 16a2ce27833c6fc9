"""Identity resolution: deterministic then probabilistic (Splink) matching into student_key."""
