"""What a file says of its own origin: plain metadata (XMP, EXIF, PNG text) and signed C2PA
Content Credentials. Read during decoding, before any model runs."""
