"""What every stage runs on: the chunked stage shape (lock, pending chunks, records, finish), device selection and
thread pinning, and the pinned weight files that ship inside PyPI packages."""
