"""State learned from traffic that routing consults."""
