"""Small shared helpers (device selection, atomic writes, seeding)."""
