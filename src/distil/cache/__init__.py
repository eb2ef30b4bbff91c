"""Offline teacher-output cache: codecs, writer, reader, manifest."""
