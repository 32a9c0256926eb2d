"""Deep Compression's weight sharing and its entropy-coded ``.dcz`` archive."""
