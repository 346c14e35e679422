"""Pictures for every task."""
