"""Point-in-time features, labels and training sets from linked histories."""
