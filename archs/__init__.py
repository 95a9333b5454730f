"""Networks that host the mixers (restoration and classification skeletons). Filled in by the networks issue."""
