"""features: source contract, simulator, ingestion, linkage, point-in-time features and training sets."""
