//! VM platform tests (filled in by the harness work).
