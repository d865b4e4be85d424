//! Plans: create, read, version, delete.
