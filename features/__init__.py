"""features: source contract, ingestion, linkage, point-in-time features and training sets."""
