"""What a job reads: listings, manifests, inventories, containers and image decoding."""
