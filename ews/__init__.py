"""ews stage."""
