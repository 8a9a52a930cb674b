//! The actormesh book as a crate.
//!
//! The chapters are the Markdown files beside this one; `mdbook serve book` renders them. Each
//! chapter is also the documentation of one (empty) module below, so every Rust listing in the
//! book is a doctest: `cargo test -p actormesh-book` compiles and runs them all (the listings
//! that need a running etcd, such as the node program of the etcd chapter, are compiled but not
//! run), and the book cannot drift away from the API it describes.
//!
//! The crate's integration test `tests/template.rs` renders the `service-template/` project with
//! cargo-generate and checks that it builds, passes clippy and rustfmt, serves, and shuts down
//! cleanly on SIGTERM.

#[doc = include_str!("introduction.md")]
pub mod introduction {}

#[doc = include_str!("getting-started.md")]
pub mod getting_started {}

#[doc = include_str!("architecture.md")]
pub mod architecture {}

#[doc = include_str!("etcd.md")]
pub mod etcd {}

#[doc = include_str!("groups.md")]
pub mod groups {}

#[doc = include_str!("entities.md")]
pub mod entities {}

#[doc = include_str!("front-door.md")]
pub mod front_door {}

#[doc = include_str!("operating.md")]
pub mod operating {}

#[doc = include_str!("supervision.md")]
pub mod supervision {}

#[doc = include_str!("actors.md")]
pub mod actors {}

#[doc = include_str!("security.md")]
pub mod security {}

/// The repository's README, so that its example is compiled and run too.
#[doc(hidden)]
#[doc = include_str!("../../README.md")]
pub mod readme {}
