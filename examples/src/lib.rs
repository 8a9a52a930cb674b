//! Shared pieces of the actormesh examples.
